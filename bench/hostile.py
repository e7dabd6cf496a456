"""What a hostile request file costs to judge: `python bench/hostile.py [--only NAME,...] [--json]`.

Each case is a file of at most 1 MiB (the size limit) shaped to make a parser or a check slow or greedy: TOML
bombs (dotted keys, table headers, arrays of tables, huge hexadecimal and decimal integers, long arrays, deep
inline tables, unterminated strings), JSON bombs (deep nesting, 5,000-digit integers, many keys, long arrays,
escapes, lone surrogates) and files just inside the limits (the most keys allowed, all of them unknown to the
catalogue). Each case runs in a fresh process that first judges a valid request (imports, catalogue, caches
warm), then judges the case as the inbox does: `load_request` with the shipped catalogue and, when that
refuses it, `mentioned_files`. The figures: wall time of that judgement, and the process's peak RSS before and
after it (the growth is what the file cost). Target per file: at most 1 s and 50 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit

MIB = 1 << 20
VALID = b'{"endpoint": "sound_effect", "model": "eleven_text_to_sound_v2", "promptText": "rain"}'


def fill(unit: bytes, head: bytes = b"", tail: bytes = b"", size: int = MIB) -> bytes:
    """``head`` + as many ``unit`` as fit + ``tail`` within ``size`` bytes."""
    count = (size - len(head) - len(tail)) // len(unit)
    return head + unit * count + tail


def _keys_toml(parts: int) -> bytes:
    lines, i = [], 0
    total = 0
    while True:
        line = ("a." * (parts - 1) + f"k{i} = 1\n").encode()
        if total + len(line) > MIB:
            break
        lines.append(line)
        total += len(line)
        i += 1
    return b"".join(lines)


def _unknown_keys_json(count: int) -> bytes:
    body: dict[str, Any] = {"endpoint": "sound_effect", "model": "eleven_text_to_sound_v2", "promptText": "rain"}
    body.update({f"promptTxt{i}": 1 for i in range(count)})
    return json.dumps(body).encode()


CASES: dict[str, tuple[str, Callable[[], bytes]]] = {
    "valid": ("json", lambda: VALID),
    "toml_dotted_40k": ("toml", lambda: b"a" + b".a" * 20_000 + b" = 1\n"),
    "toml_dotted_200k": ("toml", lambda: b"a" + b".a" * 100_000 + b" = 1\n"),
    "toml_dotted_1mib": ("toml", lambda: fill(b".a", b"a", b" = 1\n")),
    "toml_header_1mib": ("toml", lambda: fill(b".a", b"[a", b"]\n")),
    "toml_dotted_keys_32_parts": ("toml", lambda: _keys_toml(32)),
    "toml_many_keys": ("toml", lambda: _keys_toml(1)),
    "toml_array_of_tables": ("toml", lambda: fill(b"[[t]]\n")),
    "toml_long_array": ("toml", lambda: fill(b"1,", b"a = [", b"]\n")),
    "toml_hex_integer": ("toml", lambda: fill(b"f", b"a = 0x", b"\n")),
    "toml_5000_digits": ("toml", lambda: b"a = " + b"1" * 5000 + b"\n"),
    "toml_deep_inline_tables": ("toml", lambda: b"a = " + b"{b = " * 100_000 + b"1" + b"}" * 100_000 + b"\n"),
    "toml_deep_arrays": ("toml", lambda: fill(b"[", b"a = ")),
    "toml_unterminated_strings": ("toml", lambda: fill(b'\\"', b'a = "')),
    "toml_many_strings": ("toml", lambda: fill(b'"",', b"a = [", b"]\n")),
    "toml_huge_string": ("toml", lambda: fill(b"x", b'promptText = "', b'"\n')),
    "json_deep_nesting": ("json", lambda: fill(b"[")),
    "json_5000_digits": ("json", lambda: b'{"seed": ' + b"1" * 5000 + b"}"),
    "json_1mib_integer": ("json", lambda: fill(b"1", b'{"seed": ', b"}")),
    "json_many_keys": ("json", lambda: b"{" + b",".join(b'"k%d":1' % i for i in range(90_000)) + b"}"),
    "json_long_array": ("json", lambda: fill(b"1,", b'{"a": [', b"1]}")),
    "json_empty_objects": ("json", lambda: fill(b"{},", b'{"a": [', b"{}]}")),
    "json_empty_lists": ("json", lambda: fill(b"[],", b'{"a": [', b"[]]}")),
    "json_floats": ("json", lambda: fill(b"1.5,", b'{"a": [', b"1.5]}")),
    "json_escapes": ("json", lambda: fill(b"\\u0041", b'{"promptText": "', b'"}')),
    "json_lone_surrogates": ("json", lambda: fill(b"\\ud800", b'{"promptText": "', b'"}')),
    "json_10000_unknown_keys": ("json", lambda: _unknown_keys_json(9_990)),
}


class _Inbox:
    """The little of an inbox's configuration that judging a request needs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.endpoint: str | None = None
        self.defaults: dict[str, Any] = {}
        self.media_field = "promptImage"
        self.accept_media = False
        self.media_transport = "runway"


def judge_one(name: str, folder: Path) -> dict[str, Any]:
    """In this process: warm up on a valid request, then judge case ``name`` (its file is in ``folder``)."""
    from runwatch.catalog import load_catalog
    from runwatch.errors import RequestError
    from runwatch.localmedia import mentioned_files
    from runwatch.request import load_request

    catalog = load_catalog()
    inbox = _Inbox(folder)

    def judge(path: Path) -> str:
        try:
            load_request(path, root=folder, inbox=inbox, catalog=catalog, unknown_models="reject")
        except RequestError as exc:
            mentioned_files(path, folder)
            return f"rejected: {exc.problems[0]} ({len(exc.problems)} problem(s))"
        return "accepted"

    warm = folder / "warm.json"
    warm.write_bytes(VALID)
    judge(warm)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fmt = CASES[name][0]
    started = time.perf_counter()
    outcome = judge(folder / f"{name}.{fmt}")
    took = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": took, "rss_before_kib": before, "rss_after_kib": after, "outcome": outcome}


def run_case(name: str, folder: Path) -> dict[str, Any]:
    """Case ``name`` in a fresh process (peak RSS is per process); its file is written here first."""
    fmt, make = CASES[name]
    data = make()
    assert len(data) <= MIB, (name, len(data))
    (folder / f"{name}.{fmt}").write_bytes(data)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, "--folder", str(folder)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:], "bytes": len(data)}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["bytes"] = len(data)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated case names (default: all)")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(judge_one(args.child, Path(args.folder))))
        return 0
    names = args.only.split(",") if args.only else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s): {', '.join(unknown)}; known: {', '.join(CASES)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="runwatch-bench-hostile-") as tmp:
        for name in names:
            result = run_case(name, Path(tmp))
            if "error" in result:
                rows.append({"what": name, "figure": f"failed: {result['error']}", "met": False})
                continue
            grown = (result["rss_after_kib"] - result["rss_before_kib"]) / 1024
            ok = result["seconds"] <= 1.0 and grown <= 50
            rows.append(
                {
                    "what": f"judging `{name}` ({result['bytes']:,} bytes): {result['outcome'][:90]}",
                    "figure": f"{result['seconds'] * 1000:.0f} ms, peak RSS +{grown:.1f} MB",
                    "baseline": f"peak RSS {result['rss_before_kib'] / 1024:.0f} MB after a valid request",
                    "target": "≤ 1 s, ≤ +50 MB",
                    "met": ok,
                }
            )
            print(f"{name}: {rows[-1]['figure']}", file=sys.stderr)
    emit(rows, args.json)
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    os.environ.pop("RUNWATCH_CONFIG", None)
    sys.exit(main())
