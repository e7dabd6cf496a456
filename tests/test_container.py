"""The container image (Containerfile), built and run as a NAS runs it.

Base images cannot be pulled here, so the base is made from Debian's packages with mmdebstrap and imported into
podman (both cached between runs in $RUNWATCH_TEST_CACHE, /var/cache/runwatch-test by default); the image is
built offline from wheels built on the host (the WHEELS build argument), with podman and runc. It then runs
with PUID/PGID of an ordinary user, a bind-mounted tree, the key as a secret file only root can read and the
simulator on the host's loopback (--network host): a request goes through, its outputs and status file belong
to that user, the HEALTHCHECK passes, and SIGTERM ends the daemon with exit code 0 within the grace period.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from runwatch.config import load_config

from .conftest import SAMPLES, need_tool, not_applicable

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("RUNWATCH_TEST_CACHE", "/var/cache/runwatch-test"))
PUID, PGID = 4321, 4322  # no such user here: to the container, ids are numbers
KEY = "key_" + "d" * 128
# A Debian base like python:3.11-slim (python3 and venv, certificates); manuals and translations left out.
MMDEBSTRAP = [
    "mmdebstrap",
    "--quiet",
    "--variant=minbase",
    "--include=python3,python3-venv,ca-certificates",
    *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "info", "locale")),
    "bookworm",
]
# Everything the image is built from, copied into a build context of its own beside the wheels.
CONTEXT = ("Containerfile", ".dockerignore", "pyproject.toml", "README.md", "runwatch", "contrib/container")
GRACE = 30  # seconds `podman stop` waits before SIGKILL: above [daemon] stop_timeout (20 s)

pytestmark = pytest.mark.timeout(900)  # a cold run makes the base (a minute); a loaded CI machine takes longer


class Podman:
    """podman with runc and a containers.conf without default ulimits (both refused on these machines)."""

    def __init__(self, conf: Path) -> None:
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def __call__(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman", "--runtime", "runc", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done


def _base(podman: Podman) -> str:
    """The Debian base image, made once per mmdebstrap command line: the rootfs tarball and the imported image
    are both kept, and a lock keeps two test runs from making them at once."""
    digest = hashlib.sha256("\0".join(MMDEBSTRAP).encode()).hexdigest()[:12]
    tag = f"localhost/runwatch-test-base:{digest}"
    tarball = CACHE / f"rootfs-{digest}.tar"
    with (CACHE / "base.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if podman("image", "exists", tag, check=False).returncode == 0:
            return tag
        if not tarball.is_file():
            for old in CACHE.glob("rootfs-*.tar"):  # made by another command line: not needed again
                old.unlink()
            partial = tarball.with_suffix(".partial.tar")
            subprocess.run([*MMDEBSTRAP, str(partial)], check=True, capture_output=True, timeout=600)
            partial.rename(tarball)
        podman("import", str(tarball), tag)
    return tag


@pytest.fixture(scope="module")
def podman() -> Podman:
    need_tool("podman", package="podman")
    need_tool("runc", package="runc")
    need_tool("mmdebstrap", package="mmdebstrap")
    if os.geteuid() != 0:
        not_applicable("making a base with mmdebstrap and running podman with runc are done as root")
    CACHE.mkdir(parents=True, exist_ok=True)
    conf = CACHE / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    return Podman(conf)


@pytest.fixture(scope="module")
def image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The image as the README builds it offline: wheels from the host, then `build --build-arg WHEELS=...`."""
    base = _base(podman)
    context = tmp_path_factory.mktemp("context")
    for name in CONTEXT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, context / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", str(REPO), "--wheel-dir", str(context / "wheels")],
        check=True,
        capture_output=True,
        timeout=600,
    )
    tag = f"localhost/runwatch-test:{uuid.uuid4().hex[:12]}"
    podman(
        "build",
        "--format=docker",  # keeps HEALTHCHECK, which the OCI image format has no field for
        "--layers=false",
        "--pull=never",
        f"--build-arg=BASE={base}",
        "--build-arg=WHEELS=wheels",
        f"--tag={tag}",
        "--file=Containerfile",
        str(context),
    )
    yield tag
    podman("rmi", "--force", tag, check=False)


@contextlib.contextmanager
def _simulator() -> Iterator[str]:
    """`runwatch simulate` in a process of its own on the host's loopback (any free port); its URL. Stopped
    however the test ends."""
    argv = [sys.executable, "-m", "runwatch.cli", "simulate", "--port", "0", "--time-scale", "0.002"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "listening on http://" in line, line
            yield line.split("listening on ", 1)[1].strip()
        finally:
            proc.terminate()
            proc.wait(10)


class Tree:
    """The folders a NAS would bind into the container: config, inbox and outbox (the user's share), state."""

    def __init__(self, root: Path, base_url: str) -> None:
        self.config, self.inbox, self.outbox, self.state = (root / n for n in ("config", "inbox", "outbox", "state"))
        for folder in (self.config, self.inbox, self.outbox, self.state):
            folder.mkdir()
        self.config.chmod(0o755)  # the config is the user's to read (whatever umask the suite runs under)
        for folder in (self.inbox, self.outbox):  # the share belongs to the user; the state is a new root volume
            os.chown(folder, PUID, PGID)
        data = {
            "runway": {"base_url": base_url, "poll_interval": 0.2},
            "scheduler": {"rescan": 1.0},
            "inbox": [{"name": "share", "path": "/data/inbox", "outbox": "/data/outbox", "settle": 0.3}],
        }
        (self.config / "runwatch.toml").write_text(tomli_w.dumps(data))
        (self.config / "runwatch.toml").chmod(0o644)
        self.key = root / "runway_api_key"
        self.key.write_text(KEY + "\n")
        self.key.chmod(0o600)  # root's: the user can read it only through the entry point's copy

    def mounts(self) -> list[str]:
        return [
            f"--volume={self.config}:/config",
            f"--volume={self.inbox}:/data/inbox",
            f"--volume={self.outbox}:/data/outbox",
            f"--volume={self.state}:/state",
            f"--volume={self.key}:/run/secrets/runway_api_key:ro",
        ]

    def drop(self, name: str) -> None:
        """An image and a request for it, written as the user would (request last, under a temporary name)."""
        shutil.copy(SAMPLES / "still.jpg", self.inbox / "still.jpg")
        body = {"endpoint": "image_to_video", "model": "gen4_turbo", "promptImage": "still.jpg"}
        tmp = self.inbox / f"{name}.json.tmp"
        tmp.write_text(json.dumps({**body, "promptText": "waves", "ratio": "1280:720", "duration": 5}))
        for path in (self.inbox / "still.jpg", tmp):
            os.chown(path, PUID, PGID)
        tmp.rename(self.inbox / f"{name}.json")

    def wait_status(self, name: str, timeout: float = 120) -> dict[str, object]:
        path = self.outbox / f"{name}.status.json"
        deadline = time.monotonic() + timeout
        last: dict[str, object] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                last = json.loads(path.read_text())
                if last.get("state") in ("succeeded", "rejected", "failed", "needs_attention"):
                    return last
            time.sleep(0.2)
        raise AssertionError(f"{name} did not end in {timeout} s; last status: {last}")


def _wait_log(podman: Podman, name: str, event: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = podman("logs", name).stderr
        if f'"event": "{event}"' in logs:
            return
        if podman("inspect", "--format={{.State.Running}}", name).stdout.strip() != "true":
            raise AssertionError(f"the container ended before {event}:\n{logs}")
        time.sleep(0.2)
    raise AssertionError(f"no {event} in {timeout} s:\n{podman('logs', name).stderr}")


def _owner(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid


class TestImage:
    def test_request_through_the_container(self, podman: Podman, image: str, tmp_path: Path) -> None:
        """With PUID/PGID of an ordinary user and the key as a root-only secret file, the container takes a
        request from the bind-mounted inbox, writes outputs and a succeeded status file owned by that user,
        keeps its state as that user, passes its HEALTHCHECK, and exits 0 on SIGTERM within the grace period."""
        name = f"runwatch-test-{uuid.uuid4().hex[:12]}"
        with _simulator() as url:
            tree = Tree(tmp_path, url)
            podman(
                "run",
                "--detach",
                f"--name={name}",
                "--network=host",
                f"--stop-timeout={GRACE}",
                f"--env=PUID={PUID}",
                f"--env=PGID={PGID}",
                *tree.mounts(),
                image,
            )
            try:
                _wait_log(podman, name, "daemon.started")
                tree.drop("waves")
                status = tree.wait_status("waves")
                assert status["state"] == "succeeded", status
                outputs = [tree.outbox / str(o["file"]) for o in status["outputs"]]  # type: ignore[attr-defined]
                for path in [tree.outbox / "waves.status.json", *outputs, tree.inbox / ".runwatch", tree.state]:
                    assert _owner(path) == (PUID, PGID), path
                assert _owner(tree.state / "journal.sqlite3") == (PUID, PGID)
                health = podman("healthcheck", "run", name, check=False)
                assert health.returncode == 0, health.stdout + health.stderr
                said = podman("exec", name, "runwatch", "health")
                assert said.stdout.startswith("healthy"), said.stdout
                podman("stop", f"--time={GRACE}", name)  # SIGTERM, then SIGKILL (137) after GRACE seconds
                state = podman("inspect", "--format={{.State.ExitCode}} {{.State.Status}}", name).stdout.split()
                assert state == ["0", "exited"], podman("logs", name).stderr
                assert '"event": "daemon.stopped"' in podman("logs", name).stderr
            finally:
                podman("rm", "--force", name, check=False)

    def test_first_start_writes_a_starter_config(self, podman: Podman, image: str, tmp_path: Path) -> None:
        """Without a config, the entry point writes the starter one (owned by PUID/PGID, with UMASK as its
        umask) and runs the command as that user; the starter config loads and polls its inbox (NAS shares)."""
        config = tmp_path / "config"
        config.mkdir(mode=0o755)
        config.chmod(0o755)  # as a bind-mounted folder usually is, whatever umask the suite runs under
        ran = podman(
            "run",
            "--rm",
            "--network=none",
            f"--env=PUID={PUID}",
            f"--env=PGID={PGID}",
            "--env=UMASK=002",
            f"--volume={config}:/config",
            image,
            "sh",
            "-c",
            "id -u; id -g; umask",
        )
        assert ran.stdout.split() == [str(PUID), str(PGID), "0002"]
        written = config / "runwatch.toml"
        assert _owner(written) == (PUID, PGID)
        loaded = load_config(written)
        assert loaded.umask == 0o002
        assert [(str(i.path), str(i.outbox), i.polling) for i in loaded.inboxes] == [
            ("/data/inbox", "/data/outbox", True)
        ]
        assert "starter config" in ran.stderr

    def test_umask_and_user_the_entry_point_cannot_apply_are_named(
        self, podman: Podman, image: str, tmp_path: Path
    ) -> None:
        """UMASK other than the config's umask is named at start (the config's applies to outputs); started with
        --user, the container runs as that user and says that PUID/PGID are not applied."""
        config = tmp_path / "config"
        config.mkdir(mode=0o755)
        config.chmod(0o755)  # as a bind-mounted folder usually is, whatever umask the suite runs under
        (config / "runwatch.toml").write_text('umask = "027"\n[[inbox]]\npath = "/data/inbox"\noutbox = "/o"\n')
        (config / "runwatch.toml").chmod(0o644)
        mount = f"--volume={config}:/config"
        ran = podman("run", "--rm", "--network=none", "--env=UMASK=002", mount, image, "id", "-u")
        assert ran.stdout.split() == ["1000"]  # PUID's default
        assert "UMASK=002, but /config/runwatch.toml says umask = 027" in ran.stderr
        ran = podman(
            "run", "--rm", "--network=none", "--user=4000:4000", f"--env=PUID={PUID}", mount, image, "id", "-u"
        )
        assert ran.stdout.split() == ["4000"]
        assert "started as 4000:4000 (--user), so PUID/PGID are not applied" in ran.stderr

    def test_a_config_the_user_cannot_read_is_named(self, podman: Podman, image: str, tmp_path: Path) -> None:
        """A config that PUID/PGID cannot read (root's, in a folder closed to others) stops the start with exit
        78 and a message naming the file and the ids, before runwatch runs."""
        config = tmp_path / "config"
        config.mkdir(mode=0o700)
        (config / "runwatch.toml").write_text('[[inbox]]\npath = "/data/inbox"\noutbox = "/data/outbox"\n')
        ran = podman(
            "run", "--rm", "--network=none", f"--env=PUID={PUID}", f"--volume={config}:/config", image, check=False
        )
        assert ran.returncode == 78
        assert f"/config/runwatch.toml cannot be read by {PUID}:1000 (PUID:PGID)" in ran.stderr
