"""Logging: structlog, JSON lines when not on a terminal (journald), readable lines on a terminal.

Event names are stable and namespaced (``inbox.claimed``, ``api.created``, ``job.succeeded``...), with the
request name, job and task id bound as fields rather than formatted into messages.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "redact"]

_KEY = re.compile(r"key_[0-9a-fA-F]{128}")
_SIGNED = re.compile(r"((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|_jwt|sig)=)[^&\s\"']+",
                     re.IGNORECASE)


def redact(text: str) -> str:
    """The API key and presigned-URL signatures blanked out of any text."""
    return _SIGNED.sub(r"\1REDACTED", _KEY.sub("key_REDACTED", text))


def _redact_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact(value)
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
