"""runwatch under systemd: the unit file passes `systemd-analyze verify` and scores low on `security`, and a real
`runwatch run` speaks sd_notify (READY=1 once the inbox is watched, WATCHDOG=1, STATUS=, STOPPING=1) to a
datagram socket the test owns, as PID 1 would see it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from runwatch import notify
from runwatch.config import HttpConfig
from runwatch.simulator import Simulator

from .conftest import need

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "runwatch.service"
SYSUSERS = REPO / "systemd" / "runwatch.sysusers"
DOCS = REPO / "docs" / "systemd.md"
README = REPO / "README.md"
STATUS_RE = re.compile(r"^STATUS=\d+ waiting, \d+ running, \d+ held; inboxes: \d+ watched, \d+ paused")


def _tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    need(path is not None, f"{name} not on PATH: install the systemd package (PID 1 need not be systemd)")
    assert path is not None
    return path


def _documented_exposure() -> float:
    """The exposure score docs/systemd.md gives; the README must give the same."""
    found = re.search(r"exposure score on this machine \((\d+\.\d+) when written\)", DOCS.read_text())
    assert found, "docs/systemd.md no longer states the exposure score"
    in_readme = re.search(r"`systemd-analyze security --offline=yes` exposure (\d+\.\d+)", README.read_text())
    assert in_readme and in_readme[1] == found[1], "the README and docs/systemd.md state different scores"
    return float(found[1])


def _settings(name: str) -> list[str]:
    """Every value of a [Service] setting, in order (an empty assignment clears the ones before, as systemd
    reads it)."""
    values: list[str] = []
    for line in UNIT.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == name and not line.startswith("#"):
            values = [] if value == "" else [*values, *value.split()]
    return values


def _bind_allowed(family: str, port: int) -> bool:
    """Whether SocketBindAllow=/SocketBindDeny= let a TCP socket of ``family`` (ipv4, ipv6) bind ``port``, as
    systemd.resource-control(5) says: an allow rule that matches wins, then a deny rule that matches refuses."""

    def matches(rule: str) -> bool:
        parts = rule.split(":")  # [FAMILY:][PROTOCOL:]PORTS, each part but the ports optional
        rule_family = parts.pop(0) if parts[0] in ("ipv4", "ipv6") else family
        protocol = parts.pop(0) if parts[0] in ("tcp", "udp") else "tcp"
        if rule_family != family or protocol != "tcp":
            return False
        (ports,) = parts
        if ports == "any":
            return True
        low, _, high = ports.partition("-")
        return int(low) <= port <= int(high or low)

    if any(matches(rule) for rule in _settings("SocketBindAllow")):
        return True
    return not any(matches(rule) for rule in _settings("SocketBindDeny"))


def _rendered_unit(folder: Path) -> Path:
    """The unit with ExecStart pointing at this environment's runwatch.

    `verify` fails when the ExecStart binary does not exist, and /usr/local/bin/runwatch exists only once the
    install steps have been followed; every other line is checked exactly as shipped.
    """
    exe = shutil.which("runwatch") or str(Path(sys.executable).with_name("runwatch"))
    assert os.access(exe, os.X_OK), f"no runwatch executable next to {sys.executable}"
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/runwatch " in text
    target = folder / "runwatch.service"  # verify wants the unit's own name
    target.write_text(text.replace("ExecStart=/usr/local/bin/runwatch ", f"ExecStart={exe} "))
    return target


class TestUnitFile:
    def test_verify_is_silent(self, tmp_path: Path) -> None:
        """`systemd-analyze verify` accepts the unit without a single warning (warnings alone still exit 0)."""
        unit = _rendered_unit(tmp_path)
        done = subprocess.run(
            [_tool("systemd-analyze"), "verify", "--man=no", "--recursive-errors=no", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", done.stderr

    def test_security_exposure(self, tmp_path: Path) -> None:
        """`systemd-analyze security --offline=yes` rates the unit at most the score docs/systemd.md and the
        README state (1.1), with the HTTP server's socket allowed."""
        limit = _documented_exposure()
        unit = _rendered_unit(tmp_path)
        done = subprocess.run(
            [
                _tool("systemd-analyze"),
                "security",
                "--offline=yes",
                "--no-pager",
                f"--threshold={round(limit * 10)}",
                str(unit),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        found = re.search(r"Overall exposure level for runwatch\.service: (\d+\.\d+)", done.stdout)
        assert found, done.stdout + done.stderr
        assert float(found[1]) <= limit, done.stdout
        assert done.returncode == 0, done.stdout + done.stderr

    def test_every_setting_has_a_comment(self) -> None:
        """Each directive is preceded by a comment line saying why it is there."""
        lines = UNIT.read_text().splitlines()
        for i, line in enumerate(lines):
            if line and not line.startswith(("#", "[")):
                assert lines[i - 1].startswith("#"), f"line {i + 1} has no comment above it: {line}"

    def test_what_the_contract_asks(self) -> None:
        """Type=notify with a watchdog, the state directory, the key as a credential, a dedicated user."""
        settings = dict(
            line.split("=", 1)
            for line in UNIT.read_text().splitlines()
            if line and not line.startswith(("#", "[")) and not line.startswith("SystemCallFilter")
        )
        assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
        assert settings["WatchdogSec"] and settings["StateDirectory"] == "runwatch"
        assert settings["LoadCredential"] == "runway_api_key:/etc/runwatch/runway_api_key"
        assert settings["User"] == settings["Group"] == "runwatch"
        assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"

    def test_http_server_may_listen(self) -> None:
        """The sandbox lets the HTTP server listen on its default address (127.0.0.1:8765) and nothing else
        listen: IPv4 and IPv6 sockets allowed, the host's network kept, loopback not denied, binding the default
        port allowed and any other port refused. (Checked from the unit's text: enforcing it needs systemd as
        PID 1 and cgroup BPF, which a test machine may not have.)"""
        default = HttpConfig()
        assert default.host == "127.0.0.1" and default.port == 8765
        families = _settings("RestrictAddressFamilies")
        assert "AF_INET" in families and "AF_INET6" in families  # [::1]:PORT too
        assert _settings("PrivateNetwork") in ([], ["no"])
        denied = _settings("IPAddressDeny")
        assert not denied or {"localhost", "127.0.0.1", "127.0.0.0/8"} & set(_settings("IPAddressAllow"))
        assert _bind_allowed("ipv4", default.port) and _bind_allowed("ipv6", default.port)
        assert not _bind_allowed("ipv4", 8080) and not _bind_allowed("ipv6", 1)  # the control: others refused

    def test_system_call_filter_lets_it_listen(self) -> None:
        """The unit's system call filter (as systemd-analyze expands its groups) keeps every call a listening
        server makes: @system-service takes in @network-io, which holds them, and the calls taken out again
        (@privileged, @resources) hold none of them."""
        listening = {"socket", "setsockopt", "bind", "listen", "getsockname", "accept4", "recvfrom", "sendto"}

        def expanded(*groups: str) -> set[str]:
            done = subprocess.run(
                [_tool("systemd-analyze"), "syscall-filter", "--no-pager", *groups],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            lines = [line.strip() for line in done.stdout.splitlines() if line.startswith("    ")]
            return {line for line in lines if line and not line.startswith("#")}

        kept, removed = _settings("SystemCallFilter")[0], _settings("SystemCallFilter")[1:]
        assert kept == "@system-service" and removed[0].startswith("~")
        removed = [removed[0].removeprefix("~"), *removed[1:]]
        assert "@network-io" in expanded(kept)
        assert listening <= expanded("@network-io")
        assert not listening & expanded(*removed)

    def test_sysusers_creates_the_user(self, tmp_path: Path) -> None:
        """The sysusers file makes a system user and group named runwatch (a dry run on an empty root)."""
        (tmp_path / "etc").mkdir()
        done = subprocess.run(
            [_tool("systemd-sysusers"), "--dry-run", f"--root={tmp_path}", str(SYSUSERS)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        said = done.stdout + done.stderr
        assert "Creating group 'runwatch'" in said and "Creating user 'runwatch' (runwatch daemon)" in said, said


class Listener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def recv(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except TimeoutError:
            return None

    def close(self) -> None:
        self.sock.close()


class TestNotifyClient:
    def test_fields_in_one_datagram(self, tmp_path: Path) -> None:
        """Each call is one datagram of KEY=VALUE lines; a status is kept on one line."""
        listener = Listener(str(tmp_path / "n.sock"))
        env = {"NOTIFY_SOCKET": listener.address}
        try:
            assert notify.ready(env) and listener.recv(1) == "READY=1"
            assert notify.status("two\nlines", env) and listener.recv(1) == "STATUS=two lines"
            assert notify.watchdog(env) and listener.recv(1) == "WATCHDOG=1"
            assert notify.stopping(env) and listener.recv(1) == "STOPPING=1"
            assert notify.reloading(env)
            message = listener.recv(1) or ""
            assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", message), message
        finally:
            listener.close()

    def test_abstract_namespace(self) -> None:
        """A socket name starting with @ is in the abstract namespace."""
        listener = Listener(f"@runwatch-test-{os.getpid()}-{time.monotonic_ns()}")
        try:
            assert notify.ready({"NOTIFY_SOCKET": listener.address}) and listener.recv(1) == "READY=1"
        finally:
            listener.close()

    @pytest.mark.parametrize("value", [None, "", "vsock:2:1234"])
    def test_no_socket_is_a_no_op(self, value: str | None) -> None:
        """Without a usable $NOTIFY_SOCKET nothing is sent and nothing raises."""
        env = {} if value is None else {"NOTIFY_SOCKET": value}
        assert notify.ready(env) is False

    def test_never_raises(self, tmp_path: Path) -> None:
        """A socket that is gone (systemd restarted, a stale variable) is reported as False, not raised."""
        assert notify.watchdog({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")}) is False
        assert notify.watchdog({"NOTIFY_SOCKET": "/" + "x" * 200}) is False  # longer than sun_path

    @pytest.mark.parametrize(
        ("env", "expected"),
        [
            ({}, None),
            ({"WATCHDOG_USEC": "30000000"}, 30.0),
            ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "4242"}, 0.4),
            ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}, None),  # meant for another process
            ({"WATCHDOG_USEC": "0"}, None),
            ({"WATCHDOG_USEC": "soon"}, None),
            ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "me"}, None),
        ],
    )
    def test_watchdog_interval(self, env: dict[str, str], expected: float | None) -> None:
        """$WATCHDOG_USEC in seconds, only for the process $WATCHDOG_PID names (when it names one)."""
        assert notify.watchdog_interval(env, pid=4242) == expected


class DaemonProcess:
    """A real `runwatch run --config FILE` with NOTIFY_SOCKET pointing at a socket this test owns.

    Until READY=1 nothing reads the daemon's stderr, so whatever it logged before READY is already in the
    pipe when READY arrives: that is how the order of the two is checked.
    """

    def __init__(self, config: Path, key: str, *, watchdog_usec: int | None = 400_000) -> None:
        self.folder = tempfile.mkdtemp(prefix="rw-notify-")  # short: sun_path holds 108 bytes
        self.listener = Listener(os.path.join(self.folder, "notify.sock"))
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RUNWAY", "AWS_", "NOTIFY_", "WATCHDOG_", "STATE_DIRECTORY", "CREDENTIALS_"))
        }
        env.update({"RUNWAYML_API_SECRET": key, "NOTIFY_SOCKET": self.listener.address, "PYTHONUNBUFFERED": "1"})
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runwatch.cli", "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=config.parent,
        )
        self.messages: list[str] = []
        self.times: list[float] = []  # when each message arrived (monotonic)
        self.logs: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()

    def wait_ready(self, timeout: float = 60) -> list[dict[str, Any]]:
        """Blocks until READY=1; returns the log lines written before it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"no READY=1 (exit {self.proc.poll()}); stderr: {self._drain()!r}")
            message = self.listener.recv(min(left, 0.5))
            if message is None:
                continue
            self.messages.append(message)
            self.times.append(time.monotonic())
            if "READY=1" in message.splitlines():
                break
        before = [_parse(line) for line in self._drain().splitlines() if line.strip()]
        self.logs.extend(before)
        self._follow()
        return before

    def _drain(self) -> str:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        os.set_blocking(fd, False)
        chunks = []
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        os.set_blocking(fd, True)
        return b"".join(chunks).decode(errors="replace")

    def _follow(self) -> None:
        def messages() -> None:
            while not self._closing.is_set():
                try:
                    data = self.listener.sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                with self._cond:
                    self.messages.append(data.decode())
                    self.times.append(time.monotonic())
                    self._cond.notify_all()

        def logs() -> None:
            assert self.proc.stderr is not None
            for raw in self.proc.stderr:
                with self._cond:
                    self.logs.append(_parse(raw.decode(errors="replace")))
                    self._cond.notify_all()

        self.listener.sock.settimeout(0.2)  # so that close() is noticed
        for target in (messages, logs):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def received(self) -> list[tuple[str, float]]:
        """The notify messages so far, with when each arrived."""
        with self._cond:
            return list(zip(self.messages, self.times, strict=True))

    def wait_message(self, predicate: Callable[[str], bool], *, after: int = 0, timeout: float = 30) -> int:
        """Index of the first notify message from ``after`` on that satisfies ``predicate``."""
        return self._wait(self.messages, predicate, after, timeout)

    def wait_log(self, event: str, *, after: int = 0, timeout: float = 30, **fields: Any) -> int:
        """Index of the first log line from ``after`` on with this event name and fields."""

        def match(line: dict[str, Any]) -> bool:
            return line.get("event") == event and all(line.get(k) == v for k, v in fields.items())

        return self._wait(self.logs, match, after, timeout)

    def _wait(self, items: list[Any], predicate: Callable[[Any], bool], after: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(after, len(items)):
                    if predicate(items[i]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"not seen in {timeout} s; messages: {self.messages[-10:]}; logs: {self.logs[-10:]}"
                    )
                self._cond.wait(min(left, 0.2))

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._closing.set()
        for thread in self._threads:
            thread.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.listener.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _parse(line: str) -> dict[str, Any]:
    try:
        parsed = json.loads(line)
    except ValueError:
        return {"raw": line}
    return parsed if isinstance(parsed, dict) else {"raw": line}


def write_config(path: Path, sim: Simulator, state: Path, inboxes: list[tuple[str, Path, Path]], **runway: Any) -> None:
    """A config file for `runwatch run`: the simulator's URL, quick polls, and these (name, inbox, outbox)."""
    data = {
        "runway": {"base_url": sim.url, "poll_interval": 0.1, **runway},
        "state": {"dir": str(state)},
        "scheduler": {"rescan": 600.0},  # only the watch (not a periodic rescan) can find a file in time
        "inbox": [
            {"name": name, "path": str(inbox), "outbox": str(outbox), "settle": 0.3} for name, inbox, outbox in inboxes
        ],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(tomli_w.dumps(data))
    os.replace(tmp, path)  # a reload never sees half a file


@pytest.fixture
def daemon_process() -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(config: Path, key: str, **kwargs: Any) -> DaemonProcess:
        process = DaemonProcess(config, key, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def drop(inbox: Path, name: str, body: dict[str, Any]) -> None:
    """Write under a temporary name, then rename in: as producers should."""
    tmp = inbox / f".{name}.json.tmp"
    tmp.write_text(json.dumps(body))
    os.rename(tmp, inbox / f"{name}.json")


def wait_status(outbox: Path, name: str, states: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            last = json.loads((outbox / f"{name}.status.json").read_text())
            if last["state"] in states:
                return last
        time.sleep(0.05)
    raise AssertionError(f"{name} did not reach {states} in {timeout} s; last status: {last}")


SPEECH = {
    "endpoint": "text_to_speech",
    "model": "eleven_multilingual_v2",
    "promptText": "Hello.",
    "voice": {"type": "runway-preset", "presetId": "Maya"},
}
FINAL = {"succeeded", "rejected", "failed", "cancelled", "needs_attention"}


class TestSdNotify:
    def test_lifecycle(self, tmp_path: Path, sim: Simulator, daemon_process: Callable[..., DaemonProcess]) -> None:
        """READY=1 after the inbox is watched, then WATCHDOG=1 and STATUS=, STOPPING=1 and exit 0 on SIGTERM."""
        inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
        inbox.mkdir()
        config = tmp_path / "runwatch.toml"
        write_config(config, sim, tmp_path / "state", [("main", inbox, outbox)])
        daemon = daemon_process(config, sim.key)

        before = daemon.wait_ready()
        events = [line.get("event") for line in before]
        assert "inbox.watching" in events, before
        assert events.index("inbox.watching") < events.index("daemon.started")
        # Watched means watched: a file dropped the moment READY arrives is taken without waiting for a rescan.
        dropped = time.monotonic()
        drop(inbox, "hello", SPEECH)
        status = wait_status(outbox, "hello", FINAL, timeout=20)
        assert status["state"] == "succeeded", status
        assert time.monotonic() - dropped < 10

        first = daemon.wait_message(lambda m: m == "WATCHDOG=1")
        time.sleep(2.0)
        # Pings at half the interval: at least one per 0.4 s interval, even on a busy test machine.
        pings = [t for m, t in daemon.received() if m == "WATCHDOG=1"]
        assert len(pings) >= (pings[-1] - daemon.times[first]) / 0.4, pings
        assert len(pings) >= 4, daemon.messages
        statuses = [m for m in daemon.messages if m.startswith("STATUS=")]
        assert statuses and all(STATUS_RE.match(m) for m in statuses), daemon.messages
        assert any("inboxes: 1 watched, 0 paused" in m for m in statuses)

        stopped_at = time.monotonic()
        daemon.signal(signal.SIGTERM)
        daemon.wait_message(lambda m: m == "STOPPING=1", after=len(daemon.messages) - 1, timeout=10)
        assert daemon.proc.wait(15) == 0
        assert time.monotonic() - stopped_at < 10
        daemon.wait_log("daemon.stopped", timeout=5)

    def test_no_watchdog_without_watchdog_usec(
        self, tmp_path: Path, sim: Simulator, daemon_process: Callable[..., DaemonProcess]
    ) -> None:
        """Without $WATCHDOG_USEC no WATCHDOG=1 is sent; a missing inbox shows as paused in STATUS=."""
        config = tmp_path / "runwatch.toml"
        write_config(config, sim, tmp_path / "state", [("gone", tmp_path / "nowhere", tmp_path / "out")])
        daemon = daemon_process(config, sim.key, watchdog_usec=None)
        daemon.wait_ready()
        daemon.wait_message(lambda m: "inboxes: 0 watched, 1 paused" in m)
        time.sleep(0.5)
        daemon.signal(signal.SIGTERM)
        assert daemon.proc.wait(15) == 0
        assert "WATCHDOG=1" not in daemon.messages
