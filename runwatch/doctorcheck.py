"""What every ``runwatch doctor`` check returns: a :class:`CheckResult` (PASS, WARN or FAIL, a name, what was
found and, when not PASS, what to do), its one-line form, and the small helpers the check modules share
(``doctor``, ``doctorfs``, ``doctordb``, ``doctorhttp``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from runwatch.errors import ConfigError

Status = Literal["PASS", "WARN", "FAIL"]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check."""

    status: Status
    name: str
    detail: str
    hint: str = ""

    def line(self) -> str:
        """The result as printed: one line, or for a detail of several lines (a config's problems) each on a
        line of its own, indented under the first, and the hint on the last."""
        first, *more = self.detail.splitlines() or [""]
        head = f"{self.status}  {self.name:<18} "
        if not more:
            return head + first + (f" — {self.hint}" if self.hint else "")
        indent = " " * len(head)
        tail = [f"{indent}  {line}" for line in more] + ([f"{indent}— {self.hint}"] if self.hint else [])
        return "\n".join([head + first, *tail])


def _ok(name: str, detail: str) -> CheckResult:
    return CheckResult("PASS", name, detail)


def _warn(name: str, detail: str, hint: str) -> CheckResult:
    return CheckResult("WARN", name, detail, hint)


def _fail(name: str, detail: str, hint: str) -> CheckResult:
    return CheckResult("FAIL", name, detail, hint)


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _problems(heading: str, exc: ConfigError) -> str:
    """A heading and one line per problem (CheckResult.line indents them)."""
    return "\n".join([heading, *(str(p) for p in exc.problems)])
