"""The README's request examples are real: every one loads and validates, one per task endpoint."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runwatch.catalog import load_catalog
from runwatch.request import load_request

from .conftest import SAMPLES

README = Path(__file__).resolve().parent.parent / "README.md"


def _json_block_lines(text: str) -> list[str]:
    """Lines of the README's ```json blocks that are one-line request examples."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = line == "```json"
            continue
        if inside and line.startswith('{"endpoint": '):
            lines.append(line)
    return lines


EXAMPLES = [json.loads(line) for line in _json_block_lines(README.read_text())]


@dataclass(frozen=True)
class PlainInbox:
    path: Path
    endpoint: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    media_field: str = "promptImage"
    accept_media: bool = False
    media_transport: str = "runway"


def test_one_example_per_endpoint() -> None:
    """Every task endpoint has an example in the README."""
    assert {e["endpoint"] for e in EXAMPLES} == set(load_catalog().endpoints)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["endpoint"] for e in EXAMPLES])
def test_example_validates(tmp_path: Path, example: dict[str, Any]) -> None:
    """Each example, with the sample media beside it, passes runwatch's pre-flight validation."""
    for sample in ("still.jpg", "clip.mp4", "speech.mp3", "speech.wav"):
        shutil.copy(SAMPLES / sample, tmp_path / sample)
    path = tmp_path / "example.json"
    path.write_text(json.dumps(example))
    request = load_request(path, root=tmp_path, inbox=PlainInbox(tmp_path), catalog=load_catalog())
    assert request.endpoint == example["endpoint"] and request.model == example["model"]
