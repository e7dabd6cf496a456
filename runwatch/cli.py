"""The ``runwatch`` command line: the argument parser (every command, its options and help) and ``main``.

What each command does is in :mod:`runwatch.clicommands`, which the parser dispatches to. Heavy modules are
imported inside each command, so ``runwatch --help`` stays fast.
Exit codes: 0 success, 1 failure, 2 usage error, 78 configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from runwatch import __version__
from runwatch.clicommands import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_USAGE,
    _command,
    _credits,
    _demo,
    _doctor,
    _health,
    _init,
    _journal_migrate,
    _journal_rebuild,
    _nodes,
    _run,
    _simulate,
    _status,
    _submit,
    _validate,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runwatch",
        description="Turn folders into a front end for the Runway generative-media API.",
    )
    parser.add_argument("--version", action="version", version=f"runwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sim = sub.add_parser(
        "simulate",
        help="run the local Runway API simulator",
        description="Serve a local stand-in for the Runway API (same paths, errors, task states, uploads, "
        "credits and limits) so pipelines can be rehearsed without spending credits. Point the official "
        "SDK or runwatch at the printed URL.",
    )
    sim.add_argument("--port", type=int, default=8000, help="TCP port (0 picks a free one; default 8000)")
    sim.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sim.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY",
        help="accept only this API key (repeatable); default: any well-formed key",
    )
    sim.add_argument(
        "--no-fetch",
        action="store_true",
        help="check https:// media URLs for scheme, host and length without fetching them",
    )
    sim.add_argument(
        "--allow-http-loopback",
        action="store_true",
        help="accept http:// media URLs on loopback (a local S3 store, tests)",
    )
    sim.add_argument(
        "--no-version-check", action="store_true", help="accept requests without a known X-Runway-Version header"
    )
    sim.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="multiply every task's queue and run time by F (0.1 = ten times faster)",
    )
    sim.add_argument("--seed", type=int, default=0, help="seed for task durations and ids (default 0)")
    sim.add_argument("--balance", type=int, default=100_000, help="starting credit balance (default 100000)")
    sim.add_argument(
        "--concurrency",
        type=int,
        default=5,
        help="tasks per model running at once; more wait THROTTLED (0 = no limit; default 5)",
    )
    sim.add_argument(
        "--daily-limit",
        type=int,
        default=1000,
        help="tasks per model per rolling 24 h before 429 (0 = no limit; default 1000)",
    )
    sim.add_argument(
        "--output-ttl",
        type=float,
        default=86400.0,
        metavar="SECONDS",
        help="how long output URLs stay valid (default 86400)",
    )
    sim.add_argument(
        "--cancelled-visible",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="answer CANCELLED this long after a cancel before the task is gone (default 0)",
    )
    sim.add_argument(
        "--usage-lag",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="how long a create takes to show in the organization's dailyGenerations (default 0)",
    )
    sim.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="inject a fault, e.g. error:rate=0.1:status=503, error:status=502:after=true, "
        "html:status=200:after=true, rate_limit:count=3:retry_after=1, drop:endpoint=image_to_video:after=true, "
        "slow:delay=2, fail:failure_code=SAFETY.INPUT.TEXT, truncate:endpoint=outputs:keep=0.5, "
        "short:endpoint=outputs, garbage:endpoint=outputs (repeatable)",
    )
    sim.set_defaults(func=_simulate)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            metavar="FILE",
            help="configuration file (default: $RUNWATCH_CONFIG, ./runwatch.toml, /etc/runwatch/config.toml)",
        )

    run = sub.add_parser(
        "run",
        help="run the daemon",
        description="Watch the configured inboxes, submit requests, follow tasks and write outputs "
        "and status files to the outboxes. SIGTERM stops it cleanly; tasks at Runway are followed "
        "again at the next start.",
    )
    with_config(run)
    run.add_argument(
        "--once",
        action="store_true",
        help="process everything waiting, wait for every task started, then exit (cron, NAS boxes)",
    )
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--allow-root",
        action="store_true",
        help="run even as root (refused otherwise; RUNWATCH_ALLOW_ROOT=1 does the same)",
    )
    run.set_defaults(func=_run)

    status = sub.add_parser(
        "status",
        help="jobs and their states, from the journal",
        description="List requests the daemon knows, newest first, with state, progress, "
        "credits and the reason of a failure.",
    )
    with_config(status)
    status.add_argument("name", nargs="?", help="only requests with this name")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--limit", type=int, default=50, help="how many jobs to list (default 50)")
    status.set_defaults(func=_status)

    for name, text, wait_help, exit_help in (
        (
            "cancel",
            "cancel a request (and its task at Runway)",
            "wait until the request is cancelled",
            "0 the daemon cancels it (with --wait: it is cancelled)",
        ),
        (
            "retry",
            "resubmit a failed, cancelled or needs_attention request on purpose",
            "wait until the request has ended (outputs downloaded when it succeeds)",
            "0 the daemon resubmits it (with --wait: it succeeded)",
        ),
        (
            "approve",
            "approve a request held for approval",
            "wait until the request has ended (outputs downloaded when it succeeds)",
            "0 the daemon releases it (with --wait: it succeeded)",
        ),
    ):
        cmd = sub.add_parser(
            name,
            help=text,
            description=text[0].upper() + text[1:] + ". The running daemon carries it out and answers; without "
            "a daemon the command is recorded for the next `runwatch run` to carry out.",
            epilog=f"Exit status: {exit_help}; 1 no such request, the daemon refuses (not held, not active, "
            "not retryable), no daemon runs, or the request ended otherwise; 78 a config error. Ctrl-C during "
            "--wait stops waiting, not the daemon.",
        )
        with_config(cmd)
        cmd.add_argument("name", help="the request's name (its file name without .json/.toml)")
        cmd.add_argument("--wait", action="store_true", help=wait_help)
        cmd.set_defaults(func=_command)

    demo = sub.add_parser(
        "demo",
        help="see the main job end to end against the built-in simulator",
        description="Start the local Runway API simulator and a daemon in a folder tree of their own, drop sample "
        "requests for several endpoints (and one deliberately invalid one) into the inbox, show every state "
        "change from the status files, then the outputs and credits. No key, no network, no S3, nothing spent. "
        "The tree (config, inbox, outbox, journal, daemon log) is kept for a look afterwards unless --clean.",
        epilog="Exit status: 0 when every request ended as expected (the invalid one rejected, the rest "
        "succeeded), 1 otherwise, 130 when interrupted.",
    )
    demo.add_argument(
        "--dir",
        metavar="DIR",
        help="build the tree in DIR (created; must be new or empty); default: a new temporary folder",
    )
    demo.add_argument("--clean", action="store_true", help="remove the tree at the end instead of keeping it")
    demo.add_argument(
        "--time-scale",
        type=float,
        default=0.1,
        metavar="F",
        help="simulated task times relative to Runway's (default 0.1: the demo takes ~15 s)",
    )
    demo.set_defaults(func=_demo)

    init = sub.add_parser(
        "init",
        help="create an inbox/outbox layout and a commented config under DIR",
        description="Create DIR/inbox, DIR/outbox, DIR/state and a commented DIR/runwatch.toml "
        "that loads as it is. Never overwrites an existing config.",
    )
    init.add_argument("dir", metavar="DIR", help="the folder to set up (created if missing)")
    init.set_defaults(func=_init)

    validate = sub.add_parser(
        "validate",
        help="check request files without calling the API; show each one's credit estimate",
        description="Check request files (and the config) as the daemon would, without calling the API or "
        "uploading anything: a file in a configured inbox gets that inbox's endpoint and defaults, any other "
        "file plain defaults with its folder as the root for media. Prints OK and the credit estimate, or every "
        "problem as FILE: field.path: message. A folder stands for the request files at its top. Without a "
        "config file (none named, none found) plain defaults are used.",
        epilog="Exit status: 0 all valid, 1 any invalid, 2 a path that does not exist, 78 a config error.",
    )
    with_config(validate)
    validate.add_argument("paths", nargs="+", metavar="FILE", help="request files (.json/.toml) or folders")
    validate.add_argument(
        "--price",
        action="store_true",
        help="a price table instead: name, endpoint, model, estimate and basis per request, "
        "the total, and the requests whose price is unknown (nothing is spent)",
    )
    validate.add_argument("--json", action="store_true", help="machine-readable output")
    validate.set_defaults(func=_validate)

    submit = sub.add_parser(
        "submit",
        help="submit one request file outside the folders",
        description="Validate one request file, put its local media where Runway can fetch them (S3 when a "
        "bucket is configured, else Runway's uploads), create the task and print its id. The job is recorded in "
        'the journal (inbox "submit", so `runwatch status` lists it) with the intent before the create: a '
        "create whose answer was lost is reported needs_attention and never sent again. With --wait, follow the "
        "task, then download the outputs and write NAME.status.json beside them. A file in a watched inbox is "
        "refused: the daemon takes it itself.",
        epilog="Exit status: 0 submitted (with --wait: succeeded), 1 invalid, failed, cancelled, rejected or "
        "interrupted, 2 no such file, 78 a config error. Ctrl-C during --wait leaves the task running at Runway. "
        "Without --wait, S3 objects of the request stay under the prefix (a bucket lifecycle rule removes them).",
    )
    with_config(submit)
    submit.add_argument("file", metavar="FILE", help="the request file (.json or .toml)")
    submit.add_argument(
        "--wait",
        action="store_true",
        help="wait until the request has ended (progress on one line on a terminal; outputs downloaded when it "
        "succeeds)",
    )
    submit.add_argument(
        "--out",
        metavar="DIR",
        help="where --wait puts outputs and the status file (default: the request file's folder; "
        "existing files are never overwritten)",
    )
    submit.set_defaults(func=_submit)

    credits = sub.add_parser(
        "credits",
        help="balance, tier, per-model limits and today's use",
        description="Show the credit balance, the tier's monthly cap, per-model limits (concurrency, daily) with "
        "the rolling day's count and what is left, and what was spent today and this month (UTC): runwatch's "
        "journal (final credits, else the estimates of jobs in flight; per inbox and model) beside Runway's own "
        "usage report.",
        epilog="Exit status: 0 shown, 1 Runway did not answer or refused the key, 78 a config error.",
    )
    with_config(credits)
    credits.add_argument("--json", action="store_true", help="machine-readable output")
    credits.set_defaults(func=_credits)

    nodes = sub.add_parser(
        "nodes",
        help="list the runwatch nodes sharing the journal, their last heartbeat and their jobs",
        description="List the nodes of the journal database: each node's host and pid, its last heartbeat "
        "(its age by the database's clock), the unfinished jobs it owns, its clock's offset from the database's, "
        "and whether it runs, stopped, or went silent (no heartbeat for a lease: its jobs are taken over). "
        "With the SQLite journal, the one local node.",
        epilog="Exit status: 0 listed, 1 the journal cannot be read, 78 a config error.",
    )
    with_config(nodes)
    nodes.add_argument("--json", action="store_true", help="machine-readable output")
    nodes.set_defaults(func=_nodes)

    journal = sub.add_parser(
        "journal",
        help="the journal itself: rebuild it from the work areas, or move it to PostgreSQL",
        description="Commands on the journal (the state database).",
    )
    journal_sub = journal.add_subparsers(dest="journal_command", metavar="JOURNAL_COMMAND", required=True)
    rebuild = journal_sub.add_parser(
        "rebuild",
        help="make a lost or emptied journal again from the inboxes' work areas",
        description="Rebuild a missing or empty journal from the work areas: requests whose create may have "
        "left (the work area's intent marker) are followed (task id known) or parked in needs_attention, never "
        "sent again; requests never sent are sent; ended ones are taken from their status files. Refuses a "
        "journal that still holds jobs.",
    )
    with_config(rebuild)
    rebuild.set_defaults(func=_journal_rebuild)

    doctor = sub.add_parser(
        "doctor",
        help="check config, folders, filesystems, inotify, key, API, S3 and clock",
        description="Check what runwatch needs, one line each (PASS, WARN or FAIL, with a hint): the config; each "
        "inbox's folders and permissions, that its work area shares its filesystem, the filesystem type, whether "
        "inotify events really arrive (a dot-named canary file, removed at once); inotify limits; the state "
        "directory and journal; the API key (its source and length only) and the API; S3 end to end when "
        "configured; the clock against Runway's; the HTTP server's address (bound for an instant) and token; "
        "each [[notify]] target's host, Apprise URL and webhook secret (nothing is sent). Creates no folder.",
        epilog="Exit status: 0 when nothing FAILs, 1 otherwise.",
    )
    with_config(doctor)
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(func=_doctor)

    migrate = journal_sub.add_parser(
        "migrate",
        help="move the SQLite journal into an empty PostgreSQL database",
        description="Move the SQLite journal of the state directory (every job and command, as they are) into an "
        "empty PostgreSQL database, for [state] database. Stop the daemon first. The SQLite journal is kept, "
        "marked as moved; a daemon started on the database follows the unfinished jobs.",
        epilog="Exit status: 0 moved, 1 no SQLite journal, a daemon or a `runwatch submit` still running, or the "
        "database not empty or unreachable, 2 a bad URL, 78 a config error.",
    )
    with_config(migrate)
    migrate.add_argument(
        "--to", required=True, metavar="URL", help="postgresql://USER@HOST/DATABASE (no password in it)"
    )
    migrate.set_defaults(func=_journal_migrate)

    health = sub.add_parser(
        "health",
        help="check that the running daemon's main loop is not stuck (a container's HEALTHCHECK)",
        description="Read the heartbeat file the daemon's main loop touches in the state directory (every 5 s) and "
        "say whether it is recent. A loop that hangs stops touching it; the line printed says whether the daemon "
        "is stuck, still starting, or not running.",
        epilog="Exit status: 0 the heartbeat is at most --max-age seconds old, 1 otherwise, 78 a config error.",
    )
    with_config(health)
    health.add_argument(
        "--max-age",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how old the heartbeat may be (default 60, the systemd unit's WatchdogSec)",
    )
    health.set_defaults(func=_health)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    from runwatch.errors import ConfigError, RunwatchError, StartupError, UsageError

    try:
        result: int = args.func(args)
    except (ConfigError, StartupError) as exc:
        print(f"runwatch {args.command}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except UsageError as exc:
        print(f"runwatch {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RunwatchError as exc:
        print(f"runwatch {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return result


if __name__ == "__main__":
    sys.exit(main())
