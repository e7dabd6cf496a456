"""Logging: structlog, JSON lines when not on a terminal (journald), readable lines on a terminal.

Event names are stable and namespaced (``inbox.claimed``, ``api.created``, ``job.succeeded``...), with the
request name, job and task id bound as fields rather than formatted into messages. Every event goes through
:func:`runwatch.redact.redact` before it is rendered: no key or signature reaches a log.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from runwatch.redact import redact

__all__ = ["configure_logging"]


def _redact_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Every value at any depth (a list of problems, a dict of fields), the formatted traceback included; other
    # objects (an exception, bytes) become the repr the renderers would print, redacted.
    for key, value in event.items():
        event[key] = redact(value, other=repr)
    return event


def configure_logging(level: str = "info", stream: Any = None) -> None:
    stream = stream or sys.stderr
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if stream.isatty() else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "httpx", "httpcore", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
