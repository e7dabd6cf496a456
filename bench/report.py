"""The one output format of every benchmark here: rows of what / runwatch / baseline / target / met.

`emit(rows, as_json)` prints them as a markdown table, or as one line of JSON (a list of objects with the keys
"what", "figure", "baseline", "target", "met") for `bench/run.py` to gather.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def emit(rows: Sequence[Mapping[str, Any]], as_json: bool, *, baseline: str = "baseline") -> None:
    if as_json:
        print(json.dumps([dict(r) for r in rows], ensure_ascii=False))
        return
    print(f"| what | runwatch | {baseline} | target |")
    print("|---|---|---|---|")
    for r in rows:
        met = r.get("met")
        mark = "" if met is None else (" ✓" if met else " ✗")
        print(f"| {r['what']} | {r['figure']} | {r.get('baseline', '—')} | {r.get('target', '—')}{mark} |")
