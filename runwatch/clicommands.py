"""What each ``runwatch`` command does once its arguments are parsed: the functions ``runwatch.cli``'s parser
dispatches to (each returns the exit status), and the few commands small enough to live here (``simulate``,
``status``, ``journal rebuild``, ``init``'s report).

Heavy modules are imported inside each command, so ``runwatch --help`` stays fast.
Exit codes: 0 success, 1 failure, 2 usage error, 78 configuration error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 78


def _simulate(args: argparse.Namespace) -> int:
    import signal
    import threading

    from runwatch.errors import SimulatorError
    from runwatch.simulator import SimConfig, Simulator, parse_fault

    try:
        faults = [parse_fault(spec) for spec in args.fault]
    except SimulatorError as exc:
        print(f"runwatch simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config = SimConfig(
        keys=frozenset(args.key) if args.key else None,
        check_version=not args.no_version_check,
        fetch=not args.no_fetch,
        allow_http_loopback=args.allow_http_loopback,
        time_scale=args.time_scale,
        seed=args.seed,
        credit_balance=args.balance,
        concurrency=args.concurrency or None,
        daily_limit=args.daily_limit or None,
        output_ttl=args.output_ttl,
        cancelled_visible=args.cancelled_visible,
        usage_lag=args.usage_lag,
    )
    sim = Simulator(config, faults=faults, host=args.host, port=args.port)
    try:
        url = sim.start()
    except OSError as exc:
        print(f"runwatch simulate: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    key_note = "the key given with --key" if args.key else "any well-formed key (key_ + 128 hex digits)"
    print(f"Runway API simulator listening on {url}", flush=True)
    print(f"  accepts {key_note}; inspection at {url}/_sim/tasks, /_sim/requests, /_sim/creates", flush=True)
    print(f"  try: RUNWAYML_BASE_URL={url} RUNWAYML_API_SECRET={sim.key[:8]}… (Ctrl-C stops)", flush=True)
    stop.wait()
    sim.stop()
    return EXIT_OK


def _config(args: argparse.Namespace) -> Any:
    from runwatch.config import find_config, load_config

    return load_config(find_config(args.config))


def _run(args: argparse.Namespace) -> int:
    from runwatch.config import load_api_key
    from runwatch.daemon import run_daemon
    from runwatch.logs import configure_logging

    if os.geteuid() == 0 and not args.allow_root and os.environ.get("RUNWATCH_ALLOW_ROOT") != "1":
        # Refused before anything is read or created, so no state ends up owned by root.
        print(
            "runwatch run: refusing to run as root; run it as an unprivileged user (systemd User=), "
            "or pass --allow-root (or set RUNWATCH_ALLOW_ROOT=1, e.g. in a container)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    configure_logging(args.log_level)
    config = _config(args)
    return run_daemon(config, api_key=load_api_key(config), once=args.once)


def _status(args: argparse.Namespace) -> int:
    import json

    from runwatch.ops import job_owners, node_column, with_node
    from runwatch.outbox import status_document
    from runwatch.store import open_store

    config = _config(args)
    journal = open_store(config)
    try:
        jobs = journal.jobs(limit=args.limit, name=args.name)
        owners = job_owners(journal, jobs)
    finally:
        journal.close()
    if args.name and not jobs:
        print(f"runwatch status: no request named {args.name!r}", file=sys.stderr)
        return EXIT_FAILURE
    docs = [with_node(dict(status_document(j), inbox=j.inbox, job=j.id), j, owners) for j in jobs]
    if args.json:
        print(json.dumps(docs, indent=2))
        return EXIT_OK
    rows = [("NAME", "STATE", "ENDPOINT", "MODEL", "PROGRESS", "CREDITS", "UPDATED", "NOTE")]
    for d in docs:
        progress = f"{d['progress'] * 100:.0f}%" if isinstance(d["progress"], float) else ""
        note = (d["error"] or {}).get("message", "") if isinstance(d["error"], dict) else ""
        rows.append(
            (
                d["name"],
                d["state"],
                d["endpoint"] or "",
                d["model"] or "",
                progress,
                _credits_shown(d),
                d["updated_at"],
                note,
            )
        )
    for line in _table(node_column(rows, docs, owners), shutil.get_terminal_size().columns):
        print(line)
    return EXIT_OK


def _table(rows: Sequence[Sequence[str]], columns: int) -> list[str]:
    """Columns padded to their widest cell; the last one (the note) is shown whole, wrapped to the terminal
    under its own heading, or, when the table leaves it too little room, indented on lines of its own below
    its row."""
    import textwrap

    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    indent = sum(widths) + 2 * len(widths)
    beside = columns - indent >= 30
    room = columns - indent if beside else max(columns - 4, 20)
    lines = []
    for n, r in enumerate(rows):
        head = "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) + "  "
        note = [part for text in str(r[-1]).splitlines() for part in textwrap.wrap(text, room)]
        if n == 0 and not beside:
            note = []  # notes go under their rows: a heading far off to the right would only mislead
        if beside or (len(note) == 1 and len(head + note[0]) <= columns):
            lines.append((head + (note[0] if note else "")).rstrip())
            lines += [" " * indent + part for part in note[1:]]
        else:
            lines.append(head.rstrip())
            lines += ["    " + part for part in note]
    return lines


def _credits_shown(doc: dict[str, Any]) -> str:
    """Runway's charge when known; ``~N`` for an estimate (a request not yet ended, or a task whose cost could
    not be read); nothing for a request that ended without creating a task."""
    from runwatch.jobs.states import FINAL

    if doc["credits"] is not None:
        return f"~{doc['credits']:g}" if doc.get("credits_estimated") else f"{doc['credits']:g}"
    if doc["estimated_credits"] is not None and doc["state"] not in FINAL:
        return f"~{doc['estimated_credits']:g}"
    return ""


def _command(args: argparse.Namespace) -> int:
    from runwatch.control import control_command

    return control_command(args.command, args.name, config_file=args.config, wait=args.wait)


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    if not 0 < args.time_scale < float("inf"):
        print("runwatch demo: --time-scale must be a number above 0", file=sys.stderr)
        return EXIT_USAGE
    try:  # Ctrl-C while the daemon's modules load: no traceback (run_demo handles it from then on)
        from runwatch.demo import run_demo
    except KeyboardInterrupt:
        return 130
    return run_demo(directory=Path(args.dir) if args.dir else None, time_scale=args.time_scale, clean=args.clean)


def _validate(args: argparse.Namespace) -> int:
    from runwatch.validate import validate_command

    return validate_command(args.paths, config_file=args.config, price=args.price, as_json=args.json)


def _submit(args: argparse.Namespace) -> int:
    from runwatch.submit import submit_command

    return submit_command(args.file, config_file=args.config, wait=args.wait, out_dir=args.out)


def _credits(args: argparse.Namespace) -> int:
    from runwatch.credits import credits_command

    return credits_command(config_file=args.config, as_json=args.json)


def _nodes(args: argparse.Namespace) -> int:
    from runwatch.nodes import nodes_command

    return nodes_command(config_file=args.config, as_json=args.json)


def _journal_rebuild(args: argparse.Namespace) -> int:
    from runwatch.rebuild import rebuild_journal

    report = rebuild_journal(_config(args))
    states = ", ".join(f"{n} {state}" for state, n in sorted(report.states.items())) or "none"
    print(f"rebuilt {report.path} from the work areas: {report.total} requests ({states})")
    print("start runwatch again: tasks shown submitted are followed to their outputs, needs_attention ones wait")
    print("for `runwatch retry NAME` once you have checked Runway's task list")
    return EXIT_OK


def _doctor(args: argparse.Namespace) -> int:
    from runwatch.doctor import doctor_command

    return doctor_command(args.config, as_json=args.json)


def _journal_migrate(args: argparse.Namespace) -> int:
    from runwatch.store.transfer import migrate_command

    return migrate_command(args.to, config_file=args.config)


def _health(args: argparse.Namespace) -> int:
    from runwatch.health import health_command

    if not 0 < args.max_age < float("inf"):
        print("runwatch health: --max-age must be a number of seconds above 0", file=sys.stderr)
        return EXIT_USAGE
    return health_command(args.config, stale_after=args.max_age)


def _init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runwatch.init import init_layout

    directory = Path(args.dir)
    for line in init_layout(directory):
        print(line)
    print("next:")
    print(f"  runwatch doctor --config {directory / 'runwatch.toml'}")
    print(f"  runwatch run --config {directory / 'runwatch.toml'}")
    return EXIT_OK
