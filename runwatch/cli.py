"""The ``runwatch`` command line.

Heavy modules are imported inside each command, so ``runwatch --help`` stays fast.
Exit codes: 0 success, 1 failure, 2 usage error, 78 configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from runwatch import __version__

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
    sim.add_argument("--key", action="append", default=[], metavar="KEY",
                     help="accept only this API key (repeatable); default: any well-formed key")
    sim.add_argument("--no-fetch", action="store_true",
                     help="check https:// media URLs for scheme, host and length without fetching them")
    sim.add_argument("--allow-http-loopback", action="store_true",
                     help="accept http:// media URLs on loopback (a local S3 store, tests)")
    sim.add_argument("--no-version-check", action="store_true",
                     help="accept requests without a known X-Runway-Version header")
    sim.add_argument("--time-scale", type=float, default=1.0, metavar="F",
                     help="multiply every task's queue and run time by F (0.1 = ten times faster)")
    sim.add_argument("--seed", type=int, default=0, help="seed for task durations and ids (default 0)")
    sim.add_argument("--balance", type=int, default=100_000, help="starting credit balance (default 100000)")
    sim.add_argument("--concurrency", type=int, default=5,
                     help="tasks per model running at once; more wait THROTTLED (0 = no limit; default 5)")
    sim.add_argument("--daily-limit", type=int, default=1000,
                     help="tasks per model per rolling 24 h before 429 (0 = no limit; default 1000)")
    sim.add_argument("--output-ttl", type=float, default=86400.0, metavar="SECONDS",
                     help="how long output URLs stay valid (default 86400)")
    sim.add_argument("--cancelled-visible", type=float, default=0.0, metavar="SECONDS",
                     help="answer CANCELLED this long after a cancel before the task is gone (default 0)")
    sim.add_argument("--fault", action="append", default=[], metavar="SPEC",
                     help="inject a fault, e.g. error:rate=0.1:status=503, rate_limit:count=3:retry_after=1, "
                     "drop:endpoint=image_to_video:after=true, slow:delay=2, fail:failure_code=SAFETY.INPUT.TEXT "
                     "(repeatable)")
    sim.set_defaults(func=_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
