"""What a request file may cost: the limits of runwatch.requestlimits at their boundaries, through real files.

Each test shows both sides of a limit (the last allowed value passes, the next is refused with a message that
names the problem), and that what sits in strings and comments is never mistaken for structure. What the
limits cost in time and memory is measured by ``bench/hostile.py``, not here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runwatch.catalog import load_catalog
from runwatch.errors import RequestError
from runwatch.localmedia import mentioned_files
from runwatch.request import Request, load_request
from runwatch.requestlimits import MAX_DEPTH, MAX_ENTRIES, MAX_NUMBER_CHARS

SAMPLES = Path(__file__).resolve().parent.parent / "runwatch" / "data" / "samples"
# A model the catalogue does not know: its body passes as written, so only the file's own limits judge it.
FREE = 'endpoint = "image_to_video"\nmodel = "gen99_future"\npromptText = "x"\n'
FREE_JSON = {"endpoint": "image_to_video", "model": "gen99_future", "promptText": "x"}
KEYS = f"{MAX_ENTRIES:,} keys and list items"


@dataclass(frozen=True)
class Inbox:
    path: Path
    endpoint: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    media_field: str = "promptImage"
    accept_media: bool = False
    media_transport: str = "runway"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def load(root: Path, name: str, data: str | bytes) -> Request:
    path = root / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return load_request(path, root=root, inbox=Inbox(root), catalog=load_catalog())


def refused(root: Path, name: str, data: str | bytes) -> str:
    """The messages of a refused file, one per line, each after its field path."""
    with pytest.raises(RequestError) as info:
        load(root, name, data)
    assert info.value.path == str(root / name)
    return "\n".join(str(p) for p in info.value.problems)


def dotted(parts: int) -> str:
    return ".".join(f"k{i}" for i in range(parts))


class TestTomlDottedKeys:
    @pytest.mark.parametrize(
        "shape",
        [
            "{key} = 1\n",
            "[{key}]\nv = 1\n",
            "[[{key}]]\nv = 1\n",
            "t = {{ {key} = 1 }}\n",
            "x = [{{ {key} = 1 }}]\n",
        ],
    )
    def test_parts_limit(self, root: Path, shape: str) -> None:
        """A dotted key (or table header) of MAX_DEPTH parts is read; one more part is refused before tomllib,
        which builds such keys in quadratic time and memory, with the number of parts in the message."""
        parts = MAX_DEPTH - 2 if shape.startswith(("t =", "x =", "[[")) else MAX_DEPTH - 1  # room for t, x, lists
        req = load(root, "ok.toml", FREE + shape.format(key=dotted(parts)))
        assert req.body
        message = refused(root, "bomb.toml", FREE + shape.format(key=dotted(MAX_DEPTH + 1)))
        assert f"dotted key of {MAX_DEPTH + 1} parts; at most {MAX_DEPTH}" in message

    def test_quoted_parts_count(self, root: Path) -> None:
        """Quoted parts count like bare ones, and a dot inside a quoted part is not a separator."""
        quoted = ".".join(f'"p.{i}"' for i in range(MAX_DEPTH - 1))
        req = load(root, "ok.toml", FREE + f"{quoted} = 1\n")
        assert "p.0" in req.body
        assert "33 parts" in refused(root, "bomb.toml", FREE + ".".join(['"a"'] * 33) + " = 1\n")

    def test_strings_and_comments_are_not_structure(self, root: Path) -> None:
        """Dots, "=", "," and brackets inside every kind of TOML string and in comments are not counted, so
        a file full of them is read; strings end where tomllib ends them, so a bomb after them is still found
        and one inside an unterminated string is not mistaken for a key."""
        noise = "." * 200 + " = , [ { " * 30
        text = (
            FREE
            + f'a = "{noise}\\" still in"  # {noise}\n'
            + f"b = '{noise}'\n"
            + f'c = """\n{noise}\n"" \\""" still in\n"""\n'
            + f"d = '''\n{noise}\n'' '''''\n"
            + f'e = """{noise}"""""\n'
            + f"# {noise}\n"
        )
        req = load(root, "ok.toml", text)
        assert req.body["c"].endswith('"" """ still in\n') and req.body["e"] == noise + '""'
        assert "dotted key" in refused(root, "bomb.toml", text + dotted(40) + " = 1\n")
        # An unterminated string runs to the end of the file, as tomllib reads it: what follows is inside it.
        message = refused(root, "open.toml", text + 'z = """\n' + dotted(40) + " = 1\n")
        assert "not valid TOML" in message and "dotted key" not in message


class TestEntries:
    @pytest.mark.parametrize("fmt", ["json", "toml"])
    def test_list_items(self, root: Path, fmt: str) -> None:
        """Keys and list items together: MAX_ENTRIES are read, one more is refused naming the limit."""
        fits = MAX_ENTRIES - len(FREE_JSON) - 1  # the list's own key counts too
        for count, ok in ((fits, True), (fits + 1, False)):
            items = ", ".join(["1"] * count)
            text = json.dumps(FREE_JSON)[:-1] + f', "x": [{items}]}}' if fmt == "json" else FREE + f"x = [{items}]\n"
            if ok:
                assert len(load(root, f"ok.{fmt}", text).body["x"]) == count
            else:
                assert KEYS in refused(root, f"many.{fmt}", text)

    def test_json_members(self, root: Path) -> None:
        """Object members count: MAX_ENTRIES in all are read, one more is refused (before any is built)."""
        fits = MAX_ENTRIES - len(FREE_JSON)
        extra = {f"k{i}": 1 for i in range(fits)}
        assert len(load(root, "ok.json", json.dumps({**FREE_JSON, **extra})).body) >= fits
        extra[f"k{fits}"] = 1
        assert KEYS in refused(root, "many.json", json.dumps({**FREE_JSON, **extra}))

    def test_toml_key_parts(self, root: Path) -> None:
        """In TOML each part of a dotted key counts as written: MAX_ENTRIES parts are read, one more is not."""
        lines = [f"a.b{i} = 1" for i in range((MAX_ENTRIES - 3) // 2)]
        assert load(root, "ok.toml", FREE + "\n".join(lines) + "\n").body["a"]
        assert KEYS in refused(root, "many.toml", FREE + "\n".join([*lines, "a.c = 1", "a.d = 1"]) + "\n")

    @pytest.mark.parametrize("fmt", ["json", "toml"])
    def test_separators_in_strings_do_not_count(self, root: Path, fmt: str) -> None:
        """A prompt full of commas, colons and equals signs is text, not entries."""
        prompt = ",:=" * 30_000
        text = json.dumps({**FREE_JSON, "promptText": prompt}) if fmt == "json" else FREE + f'p = "{prompt}"\n'
        assert load(root, f"commas.{fmt}", text).body
        assert KEYS in refused(
            root,
            f"items.{fmt}",
            text.replace("}", ', "x": [' + "1," * 20_001 + "1]}")
            if fmt == "json"
            else text + "x = [" + "1," * 20_001 + "]\n",
        )


class TestNumbers:
    @pytest.mark.parametrize(
        ("fmt", "written"),
        [
            ("json", "9" * MAX_NUMBER_CHARS),
            ("json", "-" + "9" * (MAX_NUMBER_CHARS - 1)),
            ("json", "0." + "1" * (MAX_NUMBER_CHARS - 2)),
            ("toml", "9" * MAX_NUMBER_CHARS),
            ("toml", "0x" + "f" * (MAX_NUMBER_CHARS - 2)),
            ("toml", "1_" + "0" * (MAX_NUMBER_CHARS - 2)),
        ],
    )
    def test_number_length(self, root: Path, fmt: str, written: str) -> None:
        """A number written with MAX_NUMBER_CHARS characters is read; with one more it is refused, in JSON with
        the field's path (converting thousands of digits costs time, or fails outright)."""
        longer = written + "1"
        if fmt == "json":
            assert load(root, "ok.json", json.dumps(FREE_JSON)[:-1] + f', "n": {written}}}').body["n"]
            message = refused(root, "long.json", json.dumps(FREE_JSON)[:-1] + f', "n": {longer}}}')
            assert f"n: is a number written with {len(longer)} characters; at most {MAX_NUMBER_CHARS}" in message
        else:
            assert load(root, "ok.toml", FREE + f"n = {written}\n").body["n"]
            assert f"longer than {MAX_NUMBER_CHARS} characters" in refused(root, "long.toml", FREE + f"n = {longer}\n")

    @pytest.mark.parametrize("digits", [4300, 4301, 100_000])
    def test_thousands_of_digits(self, root: Path, digits: int) -> None:
        """Integers past Python's conversion limit end as a refusal, never as a ValueError."""
        assert "characters" in refused(root, "big.json", '{"seed": ' + "1" * digits + "}")
        assert "characters" in refused(root, "big.toml", "seed = " + "1" * digits + "\n")


class TestProblemsListed:
    def test_first_hundred_then_a_count(self, root: Path) -> None:
        """Thousands of unknown fields: the first 100 problems are listed, then one line counts the rest."""
        body = {
            "endpoint": "sound_effect",
            "model": "eleven_text_to_sound_v2",
            "promptText": "rain",
            **{f"x{i}": 1 for i in range(5_000)},
        }
        with pytest.raises(RequestError) as info:
            load(root, "many.json", json.dumps(body))
        listed = info.value.problems
        assert len(listed) == 101 and listed[0].path == "x0" and not info.value.incomplete
        assert listed[-1].message == "and 4,900 more problems like these (the first 100 are listed)"


class TestMentionedFiles:
    def test_text_that_is_not_text_names_nothing(self, root: Path) -> None:
        """A refused request with a lone surrogate beside the name of a waiting image: the image is still
        found (so it is not sent alone), and the surrogate is skipped rather than raising."""
        shutil.copy(SAMPLES / "still.jpg", root / "still.jpg")
        path = root / "odd.json"
        path.write_text('{"promptImage": "still.jpg", "promptText": "\\ud800", "other": "\\udc00.jpg"}')
        with pytest.raises(RequestError):
            load_request(path, root=root, inbox=Inbox(root), catalog=load_catalog())
        assert mentioned_files(path, root) == [str((root / "still.jpg").resolve())]

    def test_a_bomb_names_nothing(self, root: Path) -> None:
        """A file refused by the limits is not parsed a second time to look for media: it names nothing."""
        shutil.copy(SAMPLES / "still.jpg", root / "still.jpg")
        path = root / "bomb.toml"
        path.write_text('promptImage = "still.jpg"\n' + dotted(20_000) + " = 1\n")
        assert mentioned_files(path, root) == []
