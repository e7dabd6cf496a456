"""`runwatch init DIR`: a ready folder layout (inbox, outbox, state) and a commented config to start from.

It never overwrites: an existing config in DIR is left alone and reported. The config it writes is loaded
back with the config module before the command says it is done, so what it hands over is known to work.
"""

from __future__ import annotations

from pathlib import Path

from runwatch.config import load_config
from runwatch.errors import UsageError

__all__ = ["init_layout"]

TEMPLATE = """\
# runwatch configuration, written by `runwatch init`. Every key, with what it does and its default, is
# documented in config.example.toml (in the project's repository). Relative paths are taken from this
# file's folder. The Runway API key never goes here: set RUNWAYML_API_SECRET (or RUNWAY_API_KEY, a systemd
# credential named runway_api_key, or [runway] api_key_file).

[runway]
# The Runway API. To rehearse without spending credits, run `runwatch simulate --port 8000` and use
# base_url = "http://127.0.0.1:8000" (the simulator accepts any well-formed key).
base_url = "https://api.dev.runwayml.com"
# Seconds between looks at one task, unless its end is expected sooner.
poll_interval = 5.0

[state]
# The journal (what was sent and paid for). Keep it: it is how runwatch never pays twice.
dir = "state"

#[budget]
# Credits per UTC day and per month, all inboxes together; over them, requests wait as "held".
#daily = 2000
#monthly = 40000

[[inbox]]
# Drop NAME.json or NAME.toml (and the media it names) here; write under NAME.json.tmp, then rename.
path = "inbox"
# Outputs and NAME.status.json files appear here.
outbox = "outbox"
# Seconds a file must stay unchanged before it is taken when polling (network shares).
settle = 2.0
# Force polling (set true for SMB/NFS shares if runwatch doctor says events do not arrive).
polling = false
# Requests estimated above this many credits wait for `runwatch approve NAME`.
#approve_above = 200
"""


def init_layout(directory: Path) -> list[str]:
    """Create DIR/inbox, DIR/outbox, DIR/state and DIR/runwatch.toml; return what was done, line by line."""
    directory = directory.expanduser()
    config = directory / "runwatch.toml"
    if config.exists():
        raise UsageError(f"{config} exists already; runwatch init never overwrites a file")
    done = []
    try:
        for name in ("inbox", "outbox", "state"):
            folder = directory / name
            existed = folder.is_dir()
            folder.mkdir(parents=True, exist_ok=True)
            done.append(f"{'kept' if existed else 'created'} {folder}/")
        with config.open("x", encoding="utf-8") as fh:
            fh.write(TEMPLATE)
    except OSError as exc:
        raise UsageError(f"cannot set up {directory}: {exc.strerror or exc}") from exc
    load_config(config)  # what we hand over must load
    done.append(f"wrote {config}")
    return done
