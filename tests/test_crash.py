"""The crash harness in small: requests through `runwatch run` subprocesses killed with SIGKILL at random
moments; at the end every request is final, nothing was created twice, no output was lost."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from .conftest import load_script

HARNESS = Path(__file__).resolve().parent.parent / "bench" / "crash_harness.py"
# Long enough for a create that got a 5xx late in the run: it is held while its proof waits for Runway's count,
# up to two minutes after the daemon's recent creates.
FINAL_WAIT = 240


def _harness() -> ModuleType:
    return load_script(HARNESS, "crash_harness")


@pytest.mark.timeout(330)
@pytest.mark.parametrize("seed", [7])
def test_kill9_storm(tmp_path: Path, seed: int) -> None:
    """30 requests, 5 SIGKILLs: all final, no duplicate create, every output byte-identical, journal consistent."""
    harness = _harness().Harness(tmp_path, requests=30, kills=5, seed=seed, time_scale=0.01, log=lambda *_: None)
    report = harness.run(final_timeout=FINAL_WAIT)
    assert report.problems == [], "\n".join(report.lines())
    assert report.kills == 5
    assert sum(report.states.values()) == 30 and set(report.states) <= {"succeeded", "failed", "needs_attention"}
    # Every create the simulator saw belongs to exactly one request.
    assert report.creates <= 30


@pytest.mark.timeout(360)
def test_kill9_storm_with_journal_loss(tmp_path: Path) -> None:
    """30 requests, 8 SIGKILLs, and the journal deleted after the 4th and emptied after the 8th: each time the
    next start is refused (exit 78) until `runwatch journal rebuild`; then nothing is created twice, no output
    is lost, and every request ends."""
    harness = _harness().Harness(
        tmp_path, requests=30, kills=8, seed=3, time_scale=0.01, log=lambda *_: None, journal_loss=True
    )
    report = harness.run(final_timeout=FINAL_WAIT)
    assert report.problems == [], "\n".join(report.lines())
    assert report.losses == ["deleted", "emptied"]
    assert sum(report.states.values()) == 30 and report.creates <= 30
