"""`runwatch doctor`: each check on its own against real folders, real inotify, the simulator over loopback and
SeaweedFS, then the whole command's lines and exit code."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import socket
import sys
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import tomli_w

from runwatch import doctor, doctordb
from runwatch.cli import main
from runwatch.config import Config, NotifyConfig, load_config
from runwatch.doctorhttp import check_http_listen, check_http_token, check_notify, http_checks
from runwatch.jobs.job import Job
from runwatch.simulator import SimConfig, Simulator
from runwatch.store import Journal, StateLock
from runwatch.store.pgschema import MIGRATIONS, migrate, schema_version
from runwatch.store.postgres import PostgresJournal

from .conftest import IN_CI, need
from .pgserver import PASSWORD, PASSWORD_ROLE, PgServer
from .rig import Rig


def _write_config(
    root: Path,
    sim: Simulator | None,
    *,
    s3: Any = None,
    inbox: dict[str, Any] | None = None,
    base_url: str | None = None,
    make: bool = True,
    http: dict[str, Any] | None = None,
    notify: list[dict[str, Any]] | None = None,
) -> Path:
    """A config with one inbox "main"; its folders are made unless ``make`` is False. The HTTP server listens
    on any free loopback port unless ``http`` says otherwise (8765 may be taken on a shared machine)."""
    if make:
        for name in ("inbox", "outbox", "state"):
            (root / name).mkdir(exist_ok=True)
    data: dict[str, Any] = {
        "runway": {"base_url": base_url or (sim.url if sim else "http://127.0.0.1:9")},
        "state": {"dir": str(root / "state")},
        "inbox": [{"name": "main", "path": str(root / "inbox"), "outbox": str(root / "outbox"), **(inbox or {})}],
        "http": http if http is not None else {"listen": "127.0.0.1:0"},
    }
    if notify is not None:
        data["notify"] = notify
    if s3 is not None:
        data["s3"] = {
            "bucket": s3.bucket,
            "endpoint_url": s3.endpoint_url,
            "region": s3.region,
            "addressing_style": "path",
        }
    path = root / "runwatch.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def _config(root: Path, sim: Simulator | None = None, **kwargs: Any) -> Config:
    return load_config(_write_config(root, sim, **kwargs))


def _mountinfo(tmp_path: Path, mount_point: Path, kind: str) -> Path:
    """A mountinfo-format file: the root on ext4 and ``mount_point`` on ``kind``."""
    path = tmp_path / "mountinfo"
    path.write_text(
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        f"90 27 0:50 / {mount_point} rw,relatime - {kind} server:/export rw,vers=4.2\n"
    )
    return path


class TestGoodSetup:
    def test_everything_passes(self, tmp_path: Path, sim: Simulator, s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        """A complete setup (folders, journal, key, simulator, SeaweedFS) passes every check. The only ones a
        machine may not give are the inotify ones (no /proc/sys/fs/inotify, or events that never come in some
        containers); here they must pass whenever the kernel offers inotify."""
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
        path = _write_config(tmp_path, sim, s3=s3)
        env = {"RUNWAYML_API_SECRET": sim.key}
        results = doctor.run_checks(str(path), env)
        names = [r.name for r in results]
        assert names == [
            "config",
            "main/inbox",
            "main/outbox",
            "main/work",
            "main/same-fs",
            "main/fs-type",
            "main/events",
            "inotify-limits",
            "state",
            "api-key",
            "api",
            "clock",
            "s3",
            "http",
            "http-token",
        ]
        machine_bound = set() if doctor.PROC_INOTIFY.exists() or IN_CI else {"main/events", "inotify-limits"}
        assert [r for r in results if r.status != "PASS" and r.name not in machine_bound] == []
        assert all(r.hint == "" for r in results if r.status == "PASS")
        assert list((tmp_path / "inbox").iterdir()) == []  # the canary is gone
        assert not (tmp_path / "inbox" / ".runwatch").exists()  # nothing created
        assert s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="runwatch/.doctor/").get("KeyCount", 0) == 0

    def test_command_output(
        self, tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`runwatch doctor`: one line per check (status, name, detail), a summary, exit 0; the key's source and
        length are shown, never the key."""
        monkeypatch.setenv("RUNWAYML_API_SECRET", sim.key)
        path = _write_config(tmp_path, sim)
        assert main(["doctor", "--config", str(path)]) == 0
        out = capsys.readouterr().out
        lines = out.splitlines()
        assert lines[0].startswith("PASS  config ") and f"{path}" in lines[0]
        assert any(
            line.startswith("PASS  api-key ") and "$RUNWAYML_API_SECRET, 132 characters" in line for line in lines
        )
        assert "0 FAIL" in out and sim.key not in out and sim.key[4:40] not in out
        assert main(["doctor", "--config", str(path), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert {r["name"]: r["status"] for r in doc}["api"] == "PASS"


class TestFailures:
    def test_wrong_key(self, tmp_path: Path) -> None:
        """A key the API refuses: FAIL api "key refused", and doctor exits 1."""
        with Simulator(SimConfig(keys=frozenset({"key_" + "a" * 128}))) as sim:
            config = _config(tmp_path, sim)
            probe = doctor.check_api(config, "key_" + "b" * 128)
            assert probe.result.status == "FAIL" and "key refused" in probe.result.detail and probe.result.hint
            assert probe.server_time is not None  # a 401 still tells the time
            out = io.StringIO()
            code = doctor.doctor_command(
                str(tmp_path / "runwatch.toml"), out=out, env={"RUNWAYML_API_SECRET": "key_" + "b" * 128}
            )
        assert code == 1 and "FAIL  api " in out.getvalue() and "b" * 40 not in out.getvalue()

    def test_unreachable_api(self, tmp_path: Path) -> None:
        """Nothing listening at base_url: FAIL api with a hint; the clock cannot be told (WARN)."""
        config = _config(tmp_path, None)
        probe = doctor.check_api(config, "key_" + "0" * 128, timeout=2.0)
        assert probe.result.status == "FAIL" and "cannot connect" in probe.result.detail
        assert doctor.check_clock(probe.server_time).status == "WARN"

    def test_missing_inbox(self, tmp_path: Path, sim: Simulator) -> None:
        """A missing inbox is a FAIL (never created); checks that need the folder are left out; exit 1."""
        path = _write_config(tmp_path, sim, make=False)
        results = doctor.run_checks(str(path), {"RUNWAYML_API_SECRET": sim.key})
        by_name = {r.name: r for r in results}
        assert by_name["main/inbox"].status == "FAIL" and "missing" in by_name["main/inbox"].detail
        assert by_name["main/outbox"].status == "WARN"
        assert "main/events" not in by_name and not (tmp_path / "inbox").exists()
        assert doctor.doctor_command(str(path), out=io.StringIO(), env={"RUNWAYML_API_SECRET": sim.key}) == 1

    def test_inbox_not_a_folder(self, tmp_path: Path) -> None:
        """A file where the inbox should be: FAIL."""
        config = _config(tmp_path, None, make=False)
        (tmp_path / "inbox").write_text("")
        assert doctor.check_folders(config.inboxes[0])[0].status == "FAIL"

    def test_config_error(self, tmp_path: Path) -> None:
        """A config that does not load: FAIL config naming the key, nothing else is checked, exit 1."""
        path = tmp_path / "runwatch.toml"
        path.write_text('[runway]\npoll_intervall = 3\n[[inbox]]\npath = "i"\noutbox = "o"\n')
        results = doctor.run_checks(str(path), {})
        assert [(r.status, r.name) for r in results] == [("FAIL", "config")]
        assert "poll_intervall" in results[0].detail
        out = io.StringIO()
        assert doctor.doctor_command(str(path), out=out, env={}) == 1
        assert out.getvalue().startswith("FAIL  config ") and " — " in out.getvalue()

    def test_problems_on_lines_of_their_own(self, tmp_path: Path) -> None:
        """A config with two problems: the heading on the FAIL line, each problem on a line of its own indented
        under it, the hint last; the hint points at `runwatch init`, which every install has, not at a file
        that only the source tree has."""
        path = tmp_path / "runwatch.toml"
        path.write_text('[runway]\npoll_intervall = 3\n[[inbox]]\noutbox = "o"\n')
        out = io.StringIO()
        assert doctor.doctor_command(str(path), out=out, env={}) == 1
        lines = out.getvalue().splitlines()
        assert lines[0] == f"FAIL  config             {path}: invalid configuration"
        assert lines[1] == " " * 27 + "[[inbox]] 1: `path` is missing (the folder users drop requests into)"
        assert lines[2].startswith(" " * 27 + "runway.poll_intervall: unknown key")
        assert lines[3].startswith(" " * 25 + "— fix the file; `runwatch init DIR`")
        assert lines[4].startswith("1 checks:")
        assert "config.example.toml" not in out.getvalue()

    def test_no_config_found(self, tmp_path: Path) -> None:
        """No config anywhere: each place tried on a line of its own, and the hint says how to make one."""
        result, config = doctor.check_config(str(tmp_path / "nope.toml"), {})
        assert config is None and result.status == "FAIL"
        assert result.line().splitlines() == [
            "FAIL  config             no configuration file found; tried:",
            " " * 27 + f"{tmp_path / 'nope.toml'}: no such file (from --config)",
            " " * 25 + "— write one with `runwatch init DIR`, then pass --config DIR/runwatch.toml "
            "(or set $RUNWATCH_CONFIG)",
        ]

    def test_missing_key(self, tmp_path: Path) -> None:
        """No key anywhere: FAIL api-key, and the API is not asked."""
        config = _config(tmp_path, None)
        result, key = doctor.check_api_key(config, {})
        assert result.status == "FAIL" and key is None and "RUNWAYML_API_SECRET" in result.hint

    def test_odd_key_shape(self, tmp_path: Path) -> None:
        """A key that is not key_ + 128 hex digits is a WARN; its text is never shown."""
        config = _config(tmp_path, None)
        result, _ = doctor.check_api_key(config, {"RUNWAY_API_KEY": "key_deadbeef"})
        assert result.status == "WARN" and "$RUNWAY_API_KEY, 12 characters" in result.detail
        assert "deadbeef" not in result.detail + result.hint

    def test_key_from_systemd_credential(self, tmp_path: Path) -> None:
        """A key given by LoadCredential= is reported as the systemd credential."""
        config = _config(tmp_path, None)
        (tmp_path / "creds").mkdir()
        (tmp_path / "creds" / "runway_api_key").write_text("key_" + "c" * 128 + "\n")
        result, _ = doctor.check_api_key(config, {"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})
        assert result.status == "PASS" and "systemd credential runway_api_key, 132 characters" in result.detail


class TestFilesystems:
    def test_network_share_needs_polling(self, tmp_path: Path) -> None:
        """An inbox on NFS (a fake mountinfo): WARN "use polling = true"; with polling set it passes and the
        event check is not needed."""
        config = _config(tmp_path, None)
        mounts = _mountinfo(tmp_path, tmp_path / "inbox", "nfs4")
        result = doctor.check_filesystem_type(config.inboxes[0], mounts)
        assert result.status == "WARN" and "nfs4" in result.detail and "polling = true" in result.hint
        polled = _config(tmp_path, None, inbox={"polling": True}).inboxes[0]
        assert doctor.check_filesystem_type(polled, mounts).status == "PASS"
        assert doctor.check_events(config.inboxes[0], mounts=mounts).detail == "not needed: this inbox is polled"

    def test_fuse_is_a_network_filesystem(self, tmp_path: Path) -> None:
        """FUSE mounts (sshfs, rclone) count as network filesystems."""
        config = _config(tmp_path, None)
        mounts = _mountinfo(tmp_path, tmp_path, "fuse.sshfs")
        assert doctor.check_filesystem_type(config.inboxes[0], mounts).status == "WARN"

    def test_local_filesystem(self, tmp_path: Path) -> None:
        """A local filesystem passes, naming its type."""
        config = _config(tmp_path, None)
        result = doctor.check_filesystem_type(config.inboxes[0], _mountinfo(tmp_path, tmp_path / "elsewhere", "nfs"))
        assert result.status == "PASS" and result.detail == "ext4 (local)"

    def test_events_arrive(self, tmp_path: Path) -> None:
        """A canary written into a local inbox is seen by inotify; it is removed afterwards."""
        need(doctor.PROC_INOTIFY.exists(), f"this kernel offers no inotify ({doctor.PROC_INOTIFY} is missing)")
        config = _config(tmp_path, None)
        result = doctor.check_events(config.inboxes[0])
        assert result.status == "PASS" and "events arrive" in result.detail
        assert list((tmp_path / "inbox").iterdir()) == []

    def test_work_area_on_another_filesystem(self, tmp_path: Path) -> None:
        """A work area on another filesystem than its inbox: FAIL (claims must be renames)."""
        other = Path("/dev/shm")
        need(
            other.is_dir() and os.stat(other).st_dev != os.stat(tmp_path).st_dev,
            f"no second filesystem to put the work area on ({other} is not a filesystem of its own)",
        )
        work = other / f"runwatch-doctor-test-{os.getpid()}"
        config = _config(tmp_path, None, inbox={"work": str(work)})
        result = doctor.check_same_filesystem(config.inboxes[0])
        assert result.status == "FAIL" and "another filesystem" in result.detail
        assert not work.exists()

    def test_inotify_limits(self, tmp_path: Path) -> None:
        """Limits read from /proc: low ones WARN with the sysctl to raise them; unreadable ones WARN."""
        config = _config(tmp_path, None)
        for sub in ("a", "b", ".hidden"):
            (tmp_path / "inbox" / sub).mkdir()
        proc = tmp_path / "proc"
        proc.mkdir()
        (proc / "max_user_watches").write_text("524288\n")
        (proc / "max_user_instances").write_text("128\n")
        ok = doctor.check_inotify_limits(config, proc)
        assert ok.status == "PASS" and "for 3 folder(s)" in ok.detail  # the inbox and its two visible folders
        (proc / "max_user_instances").write_text("4\n")
        (proc / "max_user_watches").write_text("100\n")
        low = doctor.check_inotify_limits(config, proc)
        assert low.status == "WARN" and "max_user_instances=" in low.hint and "max_user_watches=" in low.hint
        assert doctor.check_inotify_limits(config, tmp_path / "nowhere").status == "WARN"
        polled = _config(tmp_path, None, inbox={"polling": True})
        assert doctor.check_inotify_limits(polled, proc).status == "PASS"


class TestStateClockS3:
    def test_state(self, tmp_path: Path) -> None:
        """The state dir: not there yet but creatable passes; a journal is opened and counted; a running
        daemon (its lock held) is named."""
        config = _config(tmp_path, None, make=False)
        assert doctor.check_state(config).detail.endswith("not there yet; made at the first start")
        (tmp_path / "state").mkdir()
        journal = Journal(tmp_path / "state" / "journal.sqlite3")
        journal.add(Job(id="a", name="a", inbox="main", format="json", state="running"))
        journal.add(Job(id="b", name="b", inbox="main", format="json", state="succeeded"))
        journal.close()
        result = doctor.check_state(config)
        assert result.status == "PASS" and "2 jobs, 1 active; no daemon running" in result.detail
        lock = StateLock(tmp_path / "state")
        lock.acquire()
        try:
            assert f"a daemon is running (runwatch pid {os.getpid()})" in doctor.check_state(config).detail
        finally:
            lock.release()

    @pytest.mark.parametrize(
        ("skew", "status"), [(0, "PASS"), (-20, "PASS"), (45, "WARN"), (-120, "WARN"), (301, "FAIL"), (-3600, "FAIL")]
    )
    def test_clock(self, skew: float, status: str) -> None:
        """Within 30 s passes, up to 5 min warns, beyond fails (presigned URLs break)."""
        server = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
        result = doctor.check_clock(server, server + timedelta(seconds=skew))
        assert result.status == status
        if status != "PASS":
            assert "ahead of" in result.detail if skew > 0 else "behind" in result.detail

    def test_clock_against_the_simulator(self, tmp_path: Path, sim: Simulator) -> None:
        """The Date header of a real answer is used: this machine agrees with itself."""
        probe = doctor.check_api(_config(tmp_path, sim), sim.key)
        assert probe.result.status == "PASS" and probe.server_time is not None
        assert doctor.check_clock(probe.server_time, probe.local_time).status == "PASS"

    def test_s3_wrong_bucket(self, tmp_path: Path, s3: Any) -> None:
        """A bucket that does not exist: FAIL naming S3's error code."""
        config = _config(tmp_path, None, s3=s3)
        assert config.s3 is not None
        broken = dataclasses.replace(config, s3=dataclasses.replace(config.s3, bucket="nope-x1"))
        result = doctor.check_s3(broken, s3.client())
        assert result.status == "FAIL" and "NoSuchBucket" in result.detail

    def test_s3_private_endpoint_warns_for_the_real_api(self, tmp_path: Path, s3: Any) -> None:
        """A working store on a loopback address, with the real Runway API: WARN, Runway cannot fetch from it."""
        config = _config(tmp_path, None, s3=s3, base_url="https://api.dev.runwayml.com")
        result = doctor.check_s3(config, s3.client())
        assert result.status == "WARN" and "127.0.0.1" in result.detail and "public endpoint_url" in result.hint

    def test_s3_not_configured(self, tmp_path: Path) -> None:
        """Without [s3] the check passes and says media go through Runway's uploads."""
        assert doctor.check_s3(_config(tmp_path, None)).status == "PASS"


def _secret(path: Path, text: str, mode: int) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class TestHttp:
    def test_off(self, tmp_path: Path) -> None:
        """With the server off, one PASS line says so and no token is looked for."""
        results = http_checks(_config(tmp_path, None, http={"listen": ""}))
        assert [(r.status, r.name, r.detail) for r in results] == [("PASS", "http", 'off ([http] listen = "")')]

    def test_port_taken_names_who(self, tmp_path: Path) -> None:
        """A port another program listens on is a FAIL naming http.listen and the program's pid and name."""
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            other.listen()
            port = other.getsockname()[1]
            result = check_http_listen(_config(tmp_path, None, http={"listen": f"127.0.0.1:{port}"}))
        assert result.status == "FAIL" and f"http.listen = '127.0.0.1:{port}'" in result.detail
        assert f"taken by pid {os.getpid()} (" in result.detail and f"sport = :{port}" in result.hint

    def test_port_held_by_its_own_daemon(self, tmp_path: Path, sim: Simulator, rig_factory: Callable[..., Rig]) -> None:
        """The port held by the running daemon of this very config passes, naming the daemon."""
        rig = rig_factory(sim, http={"listen": f"127.0.0.1:{_free_port()}"}).start()
        result = check_http_listen(rig.config)
        assert result.status == "PASS" and f"in use by this config's running daemon (runwatch pid {os.getpid()})" in (
            result.detail
        )

    def test_free_port_and_not_this_machine(self, tmp_path: Path) -> None:
        """A free port passes; an address that is not this machine's (TEST-NET-1) is a FAIL naming
        http.listen."""
        free = check_http_listen(_config(tmp_path, None, http={"listen": f"127.0.0.1:{_free_port()}"}))
        assert free.status == "PASS" and "the port is free" in free.detail
        foreign = check_http_listen(_config(tmp_path, None, http={"listen": "192.0.2.1:8765"}))
        assert foreign.status == "FAIL" and "192.0.2.1 is not an address of this machine" in foreign.detail
        assert "http.listen" in foreign.detail

    def test_beyond_loopback_without_a_token(self, tmp_path: Path) -> None:
        """Every address and no token: the token check FAILs naming http.listen and where a token comes from."""
        result = check_http_token(_config(tmp_path, None, http={"listen": "0.0.0.0:0"}), {})
        assert result.status == "FAIL" and "http.listen" in result.detail and "not a loopback address" in result.detail
        assert "RUNWATCH_HTTP_TOKEN" in result.hint

    @pytest.mark.parametrize(
        ("mode", "status", "said"),
        [(0o600, "PASS", "24 characters"), (0o640, "WARN", "its group can read it"), (0o604, "FAIL", "every user")],
    )
    def test_token_file_permissions(self, tmp_path: Path, mode: int, status: str, said: str) -> None:
        """A token file readable by its owner only passes; by its group warns; by everyone fails (anyone on the
        machine could approve spending). Only its source and length are shown."""
        token = _secret(tmp_path / "http-token", "tok-" + "7" * 20, mode)
        result = check_http_token(_config(tmp_path, None, http={"listen": "127.0.0.1:0", "token_file": str(token)}))
        assert result.status == status and said in result.detail and "7777" not in result.detail + result.hint
        if status == "FAIL":
            assert result.hint == f"chmod o-rwx {token}"

    def test_token_problems(self, tmp_path: Path) -> None:
        """A token file that is missing FAILs naming http.token_file; a short token warns; a token from the
        environment or a systemd credential passes with its source named."""
        missing = _config(tmp_path, None, http={"listen": "127.0.0.1:0", "token_file": str(tmp_path / "gone")})
        result = check_http_token(missing, {})
        assert result.status == "FAIL" and "http.token_file" in result.detail and "no such file" in result.detail
        short = _secret(tmp_path / "short", "abc123", 0o600)
        config = _config(tmp_path, None, http={"listen": "127.0.0.1:0", "token_file": str(short)})
        assert check_http_token(config, {}).status == "WARN"
        from_env = check_http_token(config, {"RUNWATCH_HTTP_TOKEN": "e" * 32})
        assert from_env.status == "PASS" and "$RUNWATCH_HTTP_TOKEN, 32 characters" in from_env.detail
        (tmp_path / "creds").mkdir()
        _secret(tmp_path / "creds" / "runwatch_http_token", "c" * 40, 0o400)
        credential = check_http_token(config, {"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})
        assert credential.status == "PASS" and "systemd credential runwatch_http_token" in credential.detail


class TestNotify:
    def test_webhook_signed_and_resolving(self, tmp_path: Path) -> None:
        """A webhook whose host resolves, with a secret file for its owner only: two PASS lines, the address it
        resolves to shown, its path never."""
        secret = _secret(tmp_path / "webhook-secret", "s" * 32, 0o600)
        notify = [{"url": "http://localhost:9/hook/T0KEN", "secret_file": str(secret)}]
        results = http_checks(_config(tmp_path, None, notify=notify), {})
        lines = {r.name: r for r in results}
        assert lines["notify[0]"].status == "PASS" and "webhook to http://localhost:9 (" in lines["notify[0]"].detail
        assert lines["notify[0]/secret"].status == "PASS" and "32 characters" in lines["notify[0]/secret"].detail
        assert not [r for r in results if "T0KEN" in r.line() or "s" * 32 in r.line()]

    def test_webhook_problems(self, tmp_path: Path) -> None:
        """A host that does not resolve FAILs naming notify[N].url; a secret file everyone can read FAILs naming
        notify[N].secret_file; an unsigned webhook warns."""
        secret = _secret(tmp_path / "webhook-secret", "s" * 32, 0o644)
        config = _config(
            tmp_path,
            None,
            notify=[
                {"url": "https://hooks.invalid/runwatch", "secret_file": str(secret)},
                {"url": "http://127.0.0.1/"},
            ],
        )
        by_name = {r.name: r for r in http_checks(config, {})}
        unresolved = by_name["notify[0]"]
        assert unresolved.status == "FAIL" and "notify[0].url (https://hooks.invalid)" in unresolved.detail
        assert "does not resolve" in unresolved.detail
        loose = by_name["notify[0]/secret"]
        assert loose.status == "FAIL" and "notify[0].secret_file" in loose.detail and "every user" in loose.detail
        assert by_name["notify[1]"].status == "PASS"
        assert by_name["notify[1]/secret"].status == "WARN" and "not signed" in by_name["notify[1]/secret"].detail

    def test_short_secret(self, tmp_path: Path) -> None:
        """A guessable secret (under 16 characters) FAILs naming notify[N].secret_file."""
        secret = _secret(tmp_path / "webhook-secret", "short", 0o600)
        config = _config(tmp_path, None, notify=[{"url": "http://127.0.0.1:9/", "secret_file": str(secret)}])
        result = check_notify(config, 0, config.notify[0], {})[1]
        assert result.status == "FAIL" and "notify[0].secret_file" in result.detail and "at least 16" in result.detail

    @pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "json://169.254.169.254/x"])
    def test_metadata_address(self, tmp_path: Path, url: str) -> None:
        """A target at the cloud metadata address (built past the config, which refuses it too) FAILs."""
        result = check_notify(_config(tmp_path, None), 0, NotifyConfig(url=url), {})[0]
        assert result.status == "FAIL" and "link-local or cloud metadata address" in result.detail

    def test_apprise(self, tmp_path: Path) -> None:
        """An Apprise URL the library understands passes without showing its token; Apprise's json:// form is
        resolved like a webhook."""
        config = _config(
            tmp_path, None, notify=[{"url": "tgram://123456789:AAsecretbot/4242"}, {"url": "json://localhost:9/x"}]
        )
        results = http_checks(config, {})
        by_name = {r.name: r for r in results}
        assert by_name["notify[0]"].status == "PASS" and "Apprise understands tgram://…" in by_name["notify[0]"].detail
        assert (
            by_name["notify[1]"].status == "PASS" and "Apprise to json://localhost:9 (" in by_name["notify[1]"].detail
        )
        assert "notify[0]/secret" not in by_name and not [r for r in results if "AAsecret" in r.line()]

    def test_apprise_not_installed(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the apprise library an Apprise target FAILs, naming the extra to install."""
        monkeypatch.setitem(sys.modules, "apprise", None)  # what `import apprise` meets where it is not installed
        result = check_notify(_config(tmp_path, None), 0, NotifyConfig(url="ntfy://ntfy.sh/topic"), {})[0]
        assert result.status == "FAIL" and "needs the apprise library" in result.detail
        assert "runwatch[notify]" in result.hint

    def test_in_the_command(self, tmp_path: Path, sim: Simulator) -> None:
        """`runwatch doctor` prints the HTTP and notification lines after the others, and a FAIL among them
        makes it exit 1."""
        notify = [{"url": "https://hooks.invalid/x"}]
        path = _write_config(tmp_path, sim, notify=notify)
        out = io.StringIO()
        assert doctor.doctor_command(str(path), out=out, env={"RUNWAYML_API_SECRET": sim.key}) == 1
        names = [line[6:25].strip() for line in out.getvalue().splitlines() if line[:4] in ("PASS", "WARN", "FAIL")]
        assert names[-5:] == ["s3", "http", "http-token", "notify[0]", "notify[0]/secret"]


def _database_file(root: Path, url: str, sim: Simulator | None = None) -> Path:
    """A config file whose journal is the database at ``url``."""
    path = _write_config(root, sim)
    data = tomllib.loads(path.read_text())
    data["state"]["database"] = url
    path.write_text(tomli_w.dumps(data))
    return path


def _database_config(root: Path, url: str) -> Config:
    return load_config(_database_file(root, url), env={})


class TestDatabase:
    def test_a_current_database_passes(self, tmp_path: Path, pg_url: str) -> None:
        """A database the daemon has used: the state check counts its jobs; the schema is this runwatch's and
        the clocks agree."""
        journal = PostgresJournal(pg_url)
        journal.add(Job(id="a", name="a", inbox="main", format="json", state="running"))
        journal.close()
        config = _database_config(tmp_path, pg_url)
        state = doctor.check_state(config, {})
        assert state.status == "PASS" and state.detail.startswith(f"{pg_url}: 1 jobs, 1 active")
        results = list(doctordb.check_database(config, {}))
        assert [(r.name, r.status) for r in results] == [("schema", "PASS"), ("database-clock", "PASS")]
        assert results[0].detail == f"version {MIGRATIONS[-1].version}, this runwatch's"

    def test_the_command_shows_the_database_after_the_state(
        self,
        tmp_path: Path,
        pg_url: str,
        sim: Simulator,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """`runwatch doctor` with a database: the schema and clock lines follow the state line, all passing."""
        PostgresJournal(pg_url).close()
        monkeypatch.setenv("RUNWAYML_API_SECRET", sim.key)
        assert main(["doctor", "--config", str(_database_file(tmp_path, pg_url, sim))]) in (0, 1)
        lines = capsys.readouterr().out.splitlines()
        names = [line.split()[1] for line in lines[:-1] if line[:4] in ("PASS", "WARN", "FAIL")]
        at = names.index("state")
        assert names[at : at + 3] == ["state", "schema", "database-clock"]
        assert all(line.startswith("PASS") for line in lines if line.split()[1:2] in (["schema"], ["database-clock"]))

    def test_an_unreachable_database_fails_once(self, tmp_path: Path, pg_url: str) -> None:
        """A database that cannot be reached fails the state check with the URL and the fix; the checks that
        need it are left out."""
        gone = pg_url.split("?")[0] + "?host=/nonexistent-runwatch-socket"
        config = _database_config(tmp_path, gone)
        state = doctor.check_state(config, {})
        assert state.status == "FAIL" and "cannot reach the journal database" in state.detail
        assert gone in state.detail and "database is up" in state.hint
        assert list(doctordb.check_database(config, {})) == []

    def test_the_password_comes_from_the_daemons_sources_and_is_never_shown(
        self, tmp_path: Path, pg_server: PgServer
    ) -> None:
        """The role's password from PGPASSWORD or the systemd credential reaches the database; a wrong one
        fails naming where a password comes from, and no password appears in any line."""
        name = pg_server.create_database(owner=PASSWORD_ROLE)
        try:
            config = _database_config(tmp_path, pg_server.url(name, user=PASSWORD_ROLE))
            results = [doctor.check_state(config, {"PGPASSWORD": PASSWORD})]
            results += doctordb.check_database(config, {"PGPASSWORD": PASSWORD})
            assert [r.status for r in results] == ["PASS", "PASS", "PASS"]
            credentials = tmp_path / "credentials"
            credentials.mkdir()
            (credentials / "runwatch_db_password").write_text(PASSWORD + "\n")
            assert doctor.check_state(config, {"CREDENTIALS_DIRECTORY": str(credentials)}).status == "PASS"
            wrong = doctor.check_state(config, {"PGPASSWORD": "wrong-" + PASSWORD})
            assert wrong.status == "FAIL" and "PGPASSWORD" in wrong.detail
            for result in (*results, wrong):
                assert PASSWORD not in result.line()
        finally:
            pg_server.drop_database(name)

    def test_a_newer_schema_fails(self, tmp_path: Path, pg_url: str) -> None:
        """A database migrated by a newer runwatch fails the schema check: the daemon would refuse it."""
        PostgresJournal(pg_url).close()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("INSERT INTO runwatch_schema (version, name) VALUES (999, 'from the future')")
        (result, _) = doctordb.check_database(_database_config(tmp_path, pg_url), {})
        assert result.status == "FAIL" and result.detail.startswith("version 999, newer than this runwatch knows")

    def test_an_older_schema_warns_and_is_left_as_it_is(self, tmp_path: Path, pg_url: str) -> None:
        """A database at an older schema warns that the daemon migrates it at its start; the doctor does not."""
        with psycopg.connect(pg_url, autocommit=True) as conn:
            migrate(conn, pg_url, MIGRATIONS[:1])
        config = _database_config(tmp_path, pg_url)
        assert doctor.check_state(config, {}).status == "PASS"
        (result, _) = doctordb.check_database(config, {})
        assert result.status == "WARN" and "migrated at the daemon's start" in result.detail
        with psycopg.connect(pg_url, autocommit=True) as conn:
            assert schema_version(conn) == 1

    def test_an_empty_database_is_made_at_the_first_start(self, tmp_path: Path, pg_url: str) -> None:
        """A database runwatch never used passes: its schema is made at the first start (and not by the doctor)."""
        config = _database_config(tmp_path, pg_url)
        assert doctor.check_state(config, {}).detail.startswith(f"{pg_url}: reachable; no journal yet")
        (result, _) = doctordb.check_database(config, {})
        assert result.status == "PASS" and result.detail.startswith("none yet")
        with psycopg.connect(pg_url, autocommit=True) as conn:
            assert schema_version(conn) == 0

    def test_clock_skew_of_this_machine_and_of_other_nodes(self, pg_url: str) -> None:
        """This machine's clock a few seconds off the database's warns, and so does a running node's recorded
        offset; a stopped node's is not counted, and the hint says leases use the database's clock."""
        with psycopg.connect(pg_url, autocommit=True) as conn:
            assert doctordb.check_database_clock(conn).status == "PASS"
            ahead = datetime.now(UTC) + timedelta(seconds=10)
            skewed = doctordb.check_database_clock(conn, local=ahead)
            assert skewed.status == "WARN" and "this machine is 10" in skewed.detail
            assert "leases use the database's clock" in skewed.hint
            conn.execute(_NODES)  # as the nodes' migration makes it
            conn.execute(
                "INSERT INTO nodes VALUES ('suite-2', 'h2', 1, '0.1', now(), now(), -42.5, NULL), "
                "('suite-3', 'h3', 1, '0.1', now(), now(), 600, now()), "
                "('suite-4', 'h4', 1, '0.1', now(), now(), 0.2, NULL)"
            )
            result = doctordb.check_database_clock(conn)
            assert result.status == "WARN" and result.detail == "node suite-2 is 42.5 s behind it"


_NODES = """CREATE TABLE nodes (name TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, version TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL, heartbeat_at TIMESTAMPTZ NOT NULL, clock_offset DOUBLE PRECISION,
    stopped_at TIMESTAMPTZ)"""
