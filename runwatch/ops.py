"""What the one-shot commands (``validate``, ``submit``, ``credits``, ``doctor``) share: their exit codes, the
configuration they load, the S3 client they build, and how they print amounts and tables.

Each command writes to the ``out`` stream it is given and returns the exit code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from runwatch.errors import ConfigError

if TYPE_CHECKING:
    from runwatch.config import Config

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "load_optional_config",
    "load_required_config",
    "make_s3_client",
    "plural",
    "readable",
    "write_table",
]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def readable(credits: float) -> str:
    """Credits (or any count) as people read them: 1,234 or 12.5."""
    if float(credits).is_integer():
        return f"{int(credits):,}"
    return f"{credits:,.2f}".rstrip("0").rstrip(".")


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def write_table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Columns padded to their widest cell; the last column is never padded."""
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] + "\n")


def load_optional_config(explicit: str | None, env: Mapping[str, str] = os.environ) -> Config | None:
    """The config for commands that also work without one: a file named by --config or $RUNWATCH_CONFIG
    must load; when none is named and none is found, None (plain defaults)."""
    from runwatch.config import find_config, load_config

    named = bool(explicit) or bool(env.get("RUNWATCH_CONFIG"))
    try:
        path = find_config(explicit, env)
    except ConfigError:
        if named:
            raise
        return None
    return load_config(path, env)


def load_required_config(explicit: str | None, env: Mapping[str, str] = os.environ) -> Config:
    """The config for commands that need one: ConfigError when none is found or it is invalid."""
    from runwatch.config import find_config, load_config

    return load_config(find_config(explicit, env), env)


def make_s3_client(config: Config) -> Any:
    """A boto3 S3 client for the configured store (credentials from boto3's usual chain)."""
    import boto3
    from botocore.config import Config as BotoConfig

    assert config.s3 is not None
    return boto3.client(
        "s3",
        region_name=config.s3.region,
        endpoint_url=config.s3.endpoint_url,
        config=BotoConfig(
            signature_version="s3v4",
            s3={"addressing_style": config.s3.addressing_style},
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )
