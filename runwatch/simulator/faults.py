"""Faults on demand: what the simulator does wrong, when, and how often.

A fault is a rule matched against each ``/v1`` request (or, for ``fail``, each accepted task). Rules come
from the command line (``--fault error:rate=0.2:status=503``), from the constructor, or at run time from
``POST /_sim/faults`` with the same members as JSON. The first rule that matches and fires wins.

actions:
  error       answer ``status`` (502/503/504 or any) with Runway's error envelope, its text ``message`` when
              given (else the status's phrase); ``after=true`` first carries out the request (a gateway that
              answers 502 after Runway made the task)
  html        answer ``status`` with an HTML page, as a proxy or gateway in front of Runway does: a 502/503/504
              error page, or with ``status=200`` a page where the task should be; ``after=true`` as above
  rate_limit  answer 429 "Too many requests." (with ``Retry-After: retry_after`` when given)
  slow        wait ``delay`` seconds, then answer normally
  drop        close the connection without an answer; ``after=true`` first carries out the request
              (a create then really happens: the case a careful client must not resend blindly)
  fail        the task is accepted but ends FAILED with ``failure_code`` (and the text ``message`` when given)

actions on task answers (``GET /v1/tasks/{id}``, ``endpoint="tasks"``):
  odd         answer what Runway should never say, by ``what``: ``no_output`` (SUCCEEDED without ``output``),
              ``null_output`` (``"output": null``), ``nan_progress`` (RUNNING with a progress that is not a
              number JSON allows), ``big_progress`` (RUNNING with progress 7.5); only when the task is in the
              state the oddity needs

actions on output downloads (``endpoint="outputs"``, matched on each GET of an output file):
  truncate    announce the whole file (Content-Length), send ``keep`` of it (a fraction, 0.5 unless given),
              then hang up: a connection lost mid-download
  short       serve ``keep`` of the file as if it were all of it (a Content-Length that matches): a cache or
              proxy that kept part of a file
  garbage     serve as many random bytes as the file has, with its Content-Type: a store that answers with
              something else than the file
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from runwatch.errors import SimulatorError

__all__ = ["ACTIONS", "OUTPUT_ACTIONS", "Fault", "FaultBook", "parse_fault"]

ACTIONS = ("error", "html", "rate_limit", "slow", "drop", "fail", "odd", "truncate", "short", "garbage")
ODD = ("no_output", "null_output", "nan_progress", "big_progress")
OUTPUT_ACTIONS = ("truncate", "short", "garbage")


@dataclass
class Fault:
    action: str
    rate: float = 1.0  # probability that a matching request is hit
    count: int | None = None  # how many more times it may fire; None = no limit
    endpoint: str | None = None  # a task endpoint, "tasks", "uploads", "organization"; None = every path
    method: str | None = None  # GET, POST, DELETE; None = any
    status: int = 503
    retry_after: float | None = None
    delay: float = 0.0
    after: bool = False
    failure_code: str = "INTERNAL.BAD_OUTPUT.CODE01"
    message: str | None = None  # the error's text (error) or the task's failure text (fail)
    keep: float = 0.5  # the fraction of an output's bytes sent (truncate, short)
    what: str = "no_output"  # the oddity (odd)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise SimulatorError(f"fault action {self.action!r} is not one of {', '.join(ACTIONS)}")
        if self.what not in ODD:
            raise SimulatorError(f"odd answer {self.what!r} is not one of {', '.join(ODD)}")
        if not 0.0 <= self.rate <= 1.0:
            raise SimulatorError(f"fault rate {self.rate} is not between 0 and 1")
        if not 0.0 <= self.keep < 1.0:
            raise SimulatorError(f"fault keep {self.keep} is not a fraction from 0 up to 1")
        if self.method is not None:
            self.method = self.method.upper()

    def matches(self, method: str, endpoint: str | None) -> bool:
        if self.method is not None and method != self.method:
            return False
        return self.endpoint is None or self.endpoint == endpoint

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _convert(name: str, text: str) -> Any:
    if name in ("rate", "delay", "retry_after", "keep"):
        return float(text)
    if name in ("count", "status"):
        return int(text)
    if name == "after":
        return text.lower() in ("1", "true", "yes")
    return text


def parse_fault(spec: str) -> Fault:
    """``ACTION[:key=value]...`` as written on the command line, e.g. ``fail:rate=0.5:failure_code=ASSET.INVALID``."""
    action, *parts = spec.split(":")
    names = {f.name for f in fields(Fault)}
    kwargs: dict[str, Any] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or key not in names or key == "action":
            raise SimulatorError(f"fault {spec!r}: {part!r} is not KEY=VALUE with KEY in {sorted(names - {'action'})}")
        try:
            kwargs[key] = _convert(key, value)
        except ValueError as exc:
            raise SimulatorError(f"fault {spec!r}: bad value for {key}: {value!r}") from exc
    return Fault(action, **kwargs)


class FaultBook:
    """The active rules; ``pick`` decides, under a lock, whether one fires for this request."""

    def __init__(self, faults: list[Fault] | None = None, seed: int = 0) -> None:
        self._faults = list(faults or [])
        self._lock = threading.Lock()
        self._rng = random.Random(f"faults:{seed}")  # noqa: S311 - simulation, not crypto

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def pick_odd(self, method: str, fitting: tuple[str, ...]) -> Fault | None:
        """An ``odd`` fault on task answers whose oddity is one of ``fitting`` (spent only when used)."""
        return self._take(lambda f: f.action == "odd" and f.what in fitting and f.matches(method, "tasks"))

    def pick(self, actions: tuple[str, ...], method: str, endpoint: str | None) -> Fault | None:
        return self._take(lambda f: f.action in actions and f.matches(method, endpoint))

    def _take(self, wanted: Callable[[Fault], bool]) -> Fault | None:
        """The first rule that is wanted, has firings left and fires by its rate (one firing spent)."""
        with self._lock:
            for fault in self._faults:
                if not wanted(fault):
                    continue
                if fault.count is not None and fault.count <= 0:
                    continue
                if fault.rate < 1.0 and self._rng.random() >= fault.rate:
                    continue
                if fault.count is not None:
                    fault.count -= 1
                return fault
            return None
