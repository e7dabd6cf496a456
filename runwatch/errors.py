"""The one exception tree of runwatch.

Foreign exceptions (httpx, botocore, tomllib, json, OSError) are translated into
these at the edge where they happen, with ``raise ... from exc``::

    RunwatchError
    ├── ConfigError(path, problems)        configuration file or options
    ├── CatalogError                       the model catalogue / price data files
    ├── RequestError(path, issues)         a request file that cannot be used
    ├── SimulatorError                     the local Runway API simulator
    └── UsageError                         a command line that makes no sense
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input, located by a dotted/indexed path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class RunwatchError(Exception):
    """Root of every error runwatch raises on purpose."""


class ConfigError(RunwatchError):
    """The configuration is unusable; names the file and every problem."""

    def __init__(self, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: invalid configuration\n{lines}")


class CatalogError(RunwatchError):
    """The shipped model catalogue or price data is missing or malformed."""


class RequestError(RunwatchError):
    """A request file cannot be used; names the file and every problem."""

    def __init__(self, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: invalid request\n{lines}")


class SimulatorError(RunwatchError):
    """The simulator could not start or was misconfigured."""


class UsageError(RunwatchError):
    """A command line that cannot be carried out as given."""
