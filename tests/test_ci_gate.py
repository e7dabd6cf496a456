"""The suite's own gate: under CI a test never passes by being skipped for a missing tool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

INNER = """
import pytest

from tests.conftest import need, need_tool, not_applicable


def test_tool() -> None:
    need_tool("no-such-tool-for-runwatch", package="nothing")


def test_facility() -> None:
    need(False, "no such facility")


def test_plain_skip() -> None:
    pytest.skip("something is missing")


@pytest.mark.skipif(True, reason="a marker, no reason given why")
def test_marked_skip() -> None:
    pass


def test_platform() -> None:
    not_applicable("another kind of machine")


@pytest.mark.xfail(strict=True, reason="a known gap")
def test_known_gap() -> None:
    raise AssertionError
"""


def _outcomes(tmp_path: Path, ci: str | None) -> dict[str, str]:
    """Run the inner tests with the suite's conftest; each test's outcome by name."""
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(INNER)
    report = tmp_path / "report.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    code = (
        "import json, sys, pytest\n"
        "class Keep:\n"
        "    def __init__(self): self.seen = {}\n"
        "    def pytest_runtest_logreport(self, report):\n"
        "        name = report.nodeid.split('::')[-1]\n"
        "        if report.failed or report.when == 'call' or (report.skipped and name not in self.seen):\n"
        "            self.seen[name] = 'xfailed' if hasattr(report, 'wasxfail') else report.outcome\n"
        "keep = Keep()\n"
        "pytest.main(sys.argv[1:], plugins=[keep])\n"
        f"open({str(report)!r}, 'w').write(json.dumps(keep.seen))\n"
    )
    argv = [sys.executable, "-c", code, "-q", "-p", "no:cacheprovider", "-p", "tests.conftest"]
    argv += ["-c", os.devnull, "--rootdir", str(tmp_path), str(test_file)]
    subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    outcomes: dict[str, str] = json.loads(report.read_text())
    return outcomes


class TestCiGate:
    @pytest.mark.parametrize("ci", ["true", "1"])
    def test_skips_fail_under_ci(self, tmp_path: Path, ci: str) -> None:
        """With CI set, a test skipped for a missing tool or facility, or by a plain skip, fails; one that does
        not apply to the platform is still skipped, and a known gap (strict xfail) stays one."""
        assert _outcomes(tmp_path, ci) == {
            "test_tool": "failed",
            "test_facility": "failed",
            "test_plain_skip": "failed",
            "test_marked_skip": "failed",
            "test_platform": "skipped",
            "test_known_gap": "xfailed",
        }

    @pytest.mark.parametrize("ci", [None, "", "false"])
    def test_skips_elsewhere(self, tmp_path: Path, ci: str | None) -> None:
        """Without CI (or with CI=false), a missing tool skips the test, as for anyone running the suite."""
        assert _outcomes(tmp_path, ci) == {
            "test_tool": "skipped",
            "test_facility": "skipped",
            "test_plain_skip": "skipped",
            "test_marked_skip": "skipped",
            "test_platform": "skipped",
            "test_known_gap": "xfailed",
        }
