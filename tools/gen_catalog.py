#!/usr/bin/env python3
"""Generate ``runwatch/data/catalog.json`` from the request types of the pinned ``runwayml`` SDK.

    python tools/gen_catalog.py          # (re)write the catalogue
    python tools/gen_catalog.py --check  # exit 1 when the committed file is stale

The format is specified in ``docs/catalog-format.md``. Everything comes from the SDK's
``runwayml.types.<endpoint>_create_params`` modules: types by introspection, field docstrings by
parsing the module source (they do not exist at runtime). Media kinds, ranges and defaults are
read from the docstrings by the heuristics below, corrected by two small hand-kept tables.
Warnings go to stderr so that a human notices SDK fields the heuristics cannot place.
"""

from __future__ import annotations

import argparse
import ast
import collections.abc
import importlib
import importlib.metadata
import inspect
import json
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typing_extensions

PINNED_SDK_VERSION = "5.24.0"
FORMAT_VERSION = 1
GENERATOR = "tools/gen_catalog.py"
ROOT = Path(__file__).resolve().parent.parent
CATALOG_PATH = ROOT / "runwatch" / "data" / "catalog.json"

# Endpoint name (path without /v1/) -> what its tasks produce.
ENDPOINTS: dict[str, str] = {
    "image_to_video": "video",
    "text_to_video": "video",
    "video_to_video": "video",
    "text_to_image": "image",
    "video_upscale": "video",
    "image_upscale": "image",
    "video_to_hdr": "video",
    "video_to_audio": "audio",
    "character_performance": "video",
    "sound_effect": "audio",
    "text_to_speech": "audio",
    "speech_to_speech": "audio",
    "voice_dubbing": "audio",
    "voice_isolation": "audio",
}

MEDIA_KINDS = ("image", "video", "audio")

# Media kinds the docstring heuristics miss, keyed by (endpoint, SDK class, wire name); None marks a
# suspicious-looking string that is not a media reference. Keep each entry justified.
MEDIA_OVERRIDES: dict[tuple[str, str, str], str | None] = {
    # Typed Union[str, Iterable[object]]: the array items carry no schema to infer from, and the docstring
    # ("An image or array of images") names no URI. Reference §3.0.1/§3.0.2: a promptImage string is an image.
    ("image_to_video", "Hailuo3", "promptImage"): "image",
    ("image_to_video", "Wan3", "promptImage"): "image",
    ("image_to_video", "Wan3Prime", "promptImage"): "image",
    # Same typing; the docstring ("The first frame of the video, ...") speaks of video but means an image
    # frame (reference §3.0.2, kling_4).
    ("image_to_video", "Kling4", "promptImage"): "image",
}

# Bounds documented outside the SDK docstrings. Key: (endpoint, model, wire name); "*" matches any.
# Applied only where the field's own docstring states no bound; where it does, the two must agree or
# the generator warns (so a changed docstring is noticed).
REFERENCE_RANGES: dict[tuple[str, str, str], dict[str, int | float]] = {
    # Reference §3.0.4: seeds are unsigned 32-bit (stated by the eleven_v3 docstring and third-party
    # integrations of the Runway endpoints).
    ("*", "*", "seed"): {"minimum": 0, "maximum": 4294967295},
    # Reference §3.1 ("kling3.0_* accept cfgScale (0–1, default 0.5)"); Appendix A: 0..1 for every cfgScale.
    ("*", "*", "cfgScale"): {"minimum": 0, "maximum": 1},
    # Reference §3.0.5: "gen4_turbo must specify a duration of 2-10 seconds" (SDK docstring of 2025).
    ("image_to_video", "gen4_turbo", "duration"): {"minimum": 2, "maximum": 10},
    # Reference §3.4: gen4_image_turbo requires 1–3 reference images, gen4_image takes 0–3.
    ("text_to_image", "gen4_image_turbo", "referenceImages"): {"minItems": 1, "maxItems": 3},
    ("text_to_image", "gen4_image", "referenceImages"): {"minItems": 0, "maxItems": 3},
    # Reference §3.5: act_two expressionIntensity is an integer 1–5.
    ("character_performance", "act_two", "expressionIntensity"): {"minimum": 1, "maximum": 5},
}

# String fields with these names must be classified (media kind or an explicit None override).
SUSPICIOUS_NAME = re.compile(r"uri|url|image|video|audio|reference|media|mask|frame|clip", re.IGNORECASE)

_NUM = r"-?\d[\d,]*(?:\.\d+)?(?!\w)"  # "4k" or "720p" is not a number
_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}  # fmt: skip
_COUNT = r"\d+|" + "|".join(_WORDS)

# Docstring wording that names a media kind for the string it documents.
_MEDIA_PHRASES = (
    re.compile(r"containing an encoded (image|video|audio)\b", re.IGNORECASE),
    re.compile(r"\bdata:(image|video|audio)/", re.IGNORECASE),
    re.compile(r"\b(image|video|audio) (?:URI|URL)s?\b", re.IGNORECASE),
)
_MEDIA_NOUN = re.compile(r"\b(image|video|audio)(?:s|\b)", re.IGNORECASE)

# Numeric ranges: "from 2 to 10", "from 0 (faithful) to 100", "(0–1)", "(1-10)", "[0.0, 1.0]",
# "between 0.5 and 30 seconds".
_NUMERIC_RANGES = (
    re.compile(rf"\bfrom ({_NUM})(?: \([^)]*\))? to ({_NUM})"),
    re.compile(rf"\(({_NUM})\s*[–-]\s*({_NUM})\)"),
    re.compile(rf"\[({_NUM}),\s*({_NUM})\]"),
    re.compile(rf"\bbetween ({_NUM}) and ({_NUM})"),
)
_UP_TO = re.compile(rf"\bup to ({_COUNT})\b(?! ?(?:characters|seconds|MB)\b)", re.IGNORECASE)
_COUNT_RANGE = re.compile(rf"\bof ({_COUNT}) to ({_COUNT})\b", re.IGNORECASE)
_MAX_LENGTH = re.compile(r"\bup to ([\d,]+) characters( \(measured in UTF-16 code units\))?", re.IGNORECASE)
_LENGTH_RANGE = re.compile(r"\b(\d+)-(\d+) characters\b")
_NON_EMPTY = re.compile(r"\bnon-empty\b", re.IGNORECASE)

_VALUE = r"(?:`([^`]+)`|\"([^\"]+)\"|([\w:+-]+(?:\.\d+)?))"
_DEFAULTS = (
    re.compile(rf"\bdefaults? to {_VALUE}", re.IGNORECASE),
    re.compile(rf"\bdefault {_VALUE}", re.IGNORECASE),
    re.compile(rf"\bthe default is {_VALUE}", re.IGNORECASE),
    re.compile(rf"{_VALUE} \((?:the )?default\)", re.IGNORECASE),
    re.compile(rf"{_VALUE} is (?:the )?default\b", re.IGNORECASE),
)
# A default that holds only in some situations is not a default of the field.
_CONDITIONAL = re.compile(r"\b(?:when|if|unless|otherwise)\b", re.IGNORECASE)

JSON = dict[str, Any]


class SdkVersionError(RuntimeError):
    """The installed runwayml is not the version this catalogue is generated from."""


def installed_sdk_version() -> str:
    try:
        return importlib.metadata.version("runwayml")
    except importlib.metadata.PackageNotFoundError:
        raise SdkVersionError(f"runwayml is not installed; install runwayml=={PINNED_SDK_VERSION}") from None


def require_pinned_sdk() -> None:
    version = installed_sdk_version()
    if version != PINNED_SDK_VERSION:
        raise SdkVersionError(
            f"runwayml {version} is installed but the catalogue is pinned to {PINNED_SDK_VERSION}; "
            f"install runwayml=={PINNED_SDK_VERSION} (or move the pin in {GENERATOR} and pyproject.toml)"
        )


# --- module source ---------------------------------------------------------------------------------


def normalise(text: str) -> str:
    return " ".join(text.split())


@dataclass
class ModuleSource:
    """What only the source of a params module tells: field docstrings and annotations as written.

    Docstrings of attributes do not exist at runtime. The written annotations are needed because
    typing caches parametrised types and Literal/Union compare equal regardless of order, so
    ``get_type_hints`` may hand back ``Literal["b", "a"]`` evaluated earlier for another field
    instead of this field's ``Literal["a", "b"]``: order of values would depend on evaluation history.
    """

    namespace: dict[str, Any]
    docs: dict[tuple[str, str], str] = field(default_factory=dict)  # (class, attribute) -> docstring
    annotations: dict[tuple[str, str], ast.expr] = field(default_factory=dict)
    aliases: dict[str, ast.expr] = field(default_factory=dict)  # module-level `X: TypeAlias = ...`

    @classmethod
    def read(cls, module: types.ModuleType) -> ModuleSource:
        tree = ast.parse(inspect.getsource(module))
        src = cls(namespace=vars(module))
        for node in tree.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
                src.aliases[node.target.id] = node.value
            if not isinstance(node, ast.ClassDef):
                continue
            for stmt, nxt in zip(node.body, [*node.body[1:], None], strict=True):
                if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                    continue
                doc = ""
                # An attribute's docstring is the string statement right after its annotation.
                if (
                    isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)
                ):
                    doc = normalise(nxt.value.value)
                src.docs[(node.name, stmt.target.id)] = doc
                src.annotations[(node.name, stmt.target.id)] = stmt.annotation
        return src

    def evaluate(self, node: ast.expr) -> Any:
        # The SDK's own annotation text, evaluated the way get_type_hints evaluates it.
        expression = ast.fix_missing_locations(ast.Expression(node))
        return eval(compile(expression, "<annotation>", "eval"), self.namespace)


def _subscript(node: ast.expr | None) -> tuple[str, list[ast.expr]] | None:
    """`Name[a, b]` or `typing.Name[a]` as (name, [a, b])."""
    if not isinstance(node, ast.Subscript):
        return None
    base = node.value
    name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
    args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    return name, list(args)


# --- docstring heuristics ---------------------------------------------------------------------------


def _number(text: str) -> int | float:
    text = text.replace(",", "")
    return float(text) if "." in text else int(text)


def _count(text: str) -> int:
    return _WORDS.get(text.lower()) or int(text)


def media_from_doc(doc: str) -> set[str]:
    return {m.lower() for pattern in _MEDIA_PHRASES for m in pattern.findall(doc)}


def numeric_bounds(doc: str, integer: bool) -> dict[str, int | float] | None:
    found = {(_number(lo), _number(hi)) for pattern in _NUMERIC_RANGES for lo, hi in pattern.findall(doc)}
    if len(found) == 1:
        lo, hi = found.pop()
        return {"minimum": lo, "maximum": hi}
    if not found and integer and (m := _UP_TO.search(doc)):
        # "Up to four images can be generated at once." on a count.
        return {"maximum": _count(m.group(1))}
    return None


def string_bounds(doc: str) -> dict[str, Any] | None:
    bounds: dict[str, Any] = {}
    if m := _LENGTH_RANGE.search(doc):
        bounds["minLength"], bounds["maxLength"] = int(m.group(1)), int(m.group(2))
    elif m := _MAX_LENGTH.search(doc):
        bounds["maxLength"] = int(m.group(1).replace(",", ""))
        if m.group(2):
            bounds["lengthUnit"] = "utf16"
    if _NON_EMPTY.search(doc) and "minLength" not in bounds:
        bounds["minLength"] = 1
    return bounds or None


def item_bounds(doc: str) -> dict[str, int] | None:
    if m := _COUNT_RANGE.search(doc):
        return {"minItems": _count(m.group(1)), "maxItems": _count(m.group(2))}
    if m := _UP_TO.search(doc):
        # The first "up to N" bounds the whole list; later ones bound subsets ("up to five of those").
        return {"maxItems": _count(m.group(1))}
    return None


def default_candidates(doc: str) -> list[str]:
    values = []
    for sentence in re.split(r"(?<=[.;])\s+", doc):
        if _CONDITIONAL.search(sentence):
            continue
        for pattern in _DEFAULTS:
            for groups in pattern.findall(sentence):
                values.append(next(g for g in groups if g))
    return values


def coerce_default(raw: str, node: JSON) -> tuple[bool, Any]:
    """Read `raw` as a value of the TYPE `node`, as (ok, value)."""
    kind = node["kind"]
    if kind == "union":
        for option in node["options"]:
            ok, value = coerce_default(raw, option)
            if ok:
                return ok, value
        return False, None
    if kind == "literal":
        for value in node["values"]:
            if isinstance(value, bool) or not isinstance(value, int | float):
                matches = str(value).lower() == raw.lower() if isinstance(value, bool) else value == raw
            else:
                matches = re.fullmatch(r"-?\d+(?:\.\d+)?", raw) is not None and _number(raw) == value
            if matches:
                return True, value
        return False, None
    if kind == "boolean" and raw.lower() in ("true", "false"):
        return True, raw.lower() == "true"
    if kind == "integer" and re.fullmatch(r"-?\d+", raw):
        return True, int(raw)
    if kind == "number" and re.fullmatch(r"-?\d+(?:\.\d+)?", raw):
        return True, _number(raw)
    # Free strings take no default: "a default voice is used" would otherwise yield "voice".
    return False, None


# --- type conversion --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """Where a type sits: the field it belongs to, for the heuristics and for messages."""

    endpoint: str
    model: str
    owner: str  # SDK class that declares the field
    wire: str
    doc: str
    path: str  # endpoint/model/field.subfield, for messages
    parent_type: str | None  # the `type` literal of the enclosing object, if any


class CatalogBuilder:
    """Walks the SDK types of every endpoint into catalogue dicts, collecting warnings on the way."""

    def __init__(self) -> None:
        from runwayml._utils import PropertyInfo

        self.property_info = PropertyInfo
        self.warnings: list[str] = []
        self._src = ModuleSource(namespace={})
        self._used_overrides: set[tuple[str, str, str]] = set()

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def build(self) -> JSON:
        endpoints = {name: self.endpoint(name, output) for name, output in ENDPOINTS.items()}
        for key in MEDIA_OVERRIDES.keys() - self._used_overrides:
            self.warn(f"media override {key} matched no string field; remove it")
        return {
            "format": FORMAT_VERSION,
            "sdk": {"package": "runwayml", "version": installed_sdk_version()},
            "generator": GENERATOR,
            "endpoints": endpoints,
        }

    def use_module(self, module: types.ModuleType) -> None:
        """Read the source of the module whose classes are converted next."""
        self._src = ModuleSource.read(module)

    def endpoint(self, name: str, output: str) -> JSON:
        module = importlib.import_module(f"runwayml.types.{name}_create_params")
        self.use_module(module)
        params_type = "".join(part.capitalize() for part in name.split("_")) + "CreateParams"
        root = getattr(module, params_type)
        classes = typing.get_args(root) if _is_union(root) else (root,)
        models: JSON = {}
        for cls in classes:
            model = self.model_id(cls)
            if model in models:
                raise ValueError(f"{name}: model {model!r} declared twice")
            fields = self.fields(cls, name, model, f"{name}/{model}")
            self.apply_reference_ranges(name, model, fields)
            models[model] = {"class": cls.__name__, "fields": fields}
        return {"path": f"/v1/{name}", "params_type": params_type, "output": output, "models": models}

    def model_id(self, cls: type) -> str:
        hint = _strip(typing.get_type_hints(cls, include_extras=True)["model"])
        values = typing.get_args(hint)
        if typing.get_origin(hint) is not typing.Literal or len(values) != 1:
            raise ValueError(f"{cls.__name__}.model is {hint!r}, not a single Literal")
        return str(values[0])

    def fields(self, cls: type, endpoint: str, model: str, path: str) -> JSON:
        hints = typing.get_type_hints(cls, include_extras=True)
        parent_type = _media_type_literal(hints.get("type"))
        out: JSON = {}
        for python_name, hint in hints.items():
            required, alias = self.unwrap_field(hint)
            if required is None:
                # Stainless writes `total=False` classes with Required[...] markers; under PEP 563
                # (string annotations) `__required_keys__` misses those, so read the marker itself.
                required = bool(getattr(cls, "__total__", True))
            wire = alias or python_name
            doc = self._src.docs.get((cls.__name__, python_name), "")
            site = Site(endpoint, model, cls.__name__, wire, doc, f"{path}.{wire}", parent_type)
            node = self.convert(hint, self._src.annotations.get((cls.__name__, python_name)), site)
            self.report_unclassified(node, site)
            self.apply_doc_bounds(node, doc)
            entry: JSON = {"python": python_name, "required": required, "doc": doc, "type": node}
            if (default := self.default(node, site)) is not None:
                entry["default"] = default
            out[wire] = entry
        return out

    def unwrap_field(self, hint: Any) -> tuple[bool | None, str | None]:
        """(required, wire alias) from the Required/NotRequired/Annotated wrappers of a field hint."""
        required: bool | None = None
        alias: str | None = None
        while True:
            origin = typing.get_origin(hint)
            if origin is typing_extensions.Required:
                required, hint = True, typing.get_args(hint)[0]
            elif origin is typing_extensions.NotRequired:
                required, hint = False, typing.get_args(hint)[0]
            elif origin is typing_extensions.Annotated:
                for meta in hint.__metadata__:
                    if isinstance(meta, self.property_info) and meta.alias:
                        alias = meta.alias
                hint = hint.__origin__
            else:
                return required, alias

    def convert(self, tp: Any, node: ast.expr | None, site: Site, in_array: bool = False) -> JSON:
        """TYPE of runtime type `tp`; `node` is the same type as written, for the order of members."""
        tp, node = self.peel(tp, node)
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        written = _subscript(node)
        inner = written[1] if written else []
        if tp is type(None):
            return {"kind": "null"}
        if tp is str:
            return self.string(site, in_array)
        if tp is bool:
            return {"kind": "boolean"}
        if tp is int:
            return {"kind": "integer"}
        if tp is float:
            return {"kind": "number"}
        if tp is object or tp is typing.Any:
            return {"kind": "any"}
        if origin is typing.Literal:
            values = list(args)
            if written and written[0] == "Literal" and all(isinstance(n, ast.Constant) for n in inner):
                in_source = [typing.cast(ast.Constant, n).value for n in inner]
                if len(in_source) == len(values) and typing.Literal[tuple(in_source)] == tp:
                    values = in_source
                else:
                    self.warn(f"{site.path}: literal {tp!r} does not match its source; kept runtime order")
            return {"kind": "literal", "values": values}
        if _is_union(tp):
            pairs = self.source_order(args, node, site)
            return self.union([self.convert(arg, n, site, in_array) for arg, n in pairs], site)
        if origin in (list, collections.abc.Iterable, collections.abc.Sequence):
            item_node = inner[0] if len(inner) == 1 else None
            return {"kind": "array", "items": self.convert(args[0], item_node, site, in_array=True)}
        if origin in (dict, collections.abc.Mapping):
            if args[0] is not str:
                raise TypeError(f"{site.path}: map keys must be str, got {tp!r}")
            values_node = inner[1] if len(inner) == 2 else None
            value_type = self.convert(args[1], values_node, site)
            return {"kind": "any"} if value_type["kind"] == "any" else {"kind": "map", "values": value_type}
        if typing_extensions.is_typeddict(tp):
            members = self.fields(tp, site.endpoint, site.model, site.path)
            return {"kind": "object", "name": tp.__name__, "fields": members}
        raise TypeError(f"{site.path}: unsupported type {tp!r}; extend {GENERATOR}")

    def peel(self, tp: Any, node: ast.expr | None) -> tuple[Any, ast.expr | None]:
        """Drop Required/NotRequired/Annotated from both views and follow module-level type aliases."""
        while True:
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                node = ast.parse(node.value, mode="eval").body  # a quoted forward reference
            elif isinstance(node, ast.Name) and node.id in self._src.aliases:
                node = self._src.aliases[node.id]
            if typing.get_origin(tp) not in _WRAPPERS:
                return tp, node
            tp = _unwrap_once(tp)
            written = _subscript(node)
            node = written[1][0] if written and written[0] in _WRAPPER_NAMES else None

    def source_order(self, args: tuple[Any, ...], node: ast.expr | None, site: Site) -> list[tuple[Any, Any]]:
        """Pair the members of a runtime Union with their written form, in the order they are written."""
        written = _subscript(node)
        if written and written[0] == "Optional":
            written = ("Union", [*written[1], ast.Constant(None)])
        if written and written[0] == "Union" and len(written[1]) == len(args):
            pairs = []
            for member in written[1]:
                value = self._src.evaluate(member)
                match = [arg for arg in args if arg == (type(None) if value is None else value)]
                if len(match) != 1:
                    break
                pairs.append((match[0], member))
            else:
                return pairs
        self.warn(f"{site.path}: union {args!r} does not match its source; kept runtime order")
        return [(arg, None) for arg in args]

    def report_unclassified(self, node: JSON, site: Site) -> None:
        """Warn about media-looking strings that neither the docstring nor a union sibling placed."""
        if node.pop("_unclassified", False):
            self.warn(f"{site.path}: string of a media-looking field is unclassified")
        for child in node.get("options", []):
            self.report_unclassified(child, site)

    def union(self, options: list[JSON], site: Site) -> JSON:
        # Union[str, Iterable[Obj]]: the bare string is shorthand for one object's `uri`, so it shares
        # that uri's media kind when its own docstring is not explicit.
        uri_kinds = {
            kind
            for option in options
            if option["kind"] == "array" and option["items"]["kind"] == "object"
            for kind in [option["items"]["fields"].get("uri", {}).get("type", {}).get("media")]
            if kind
        }
        for option in options:
            if option["kind"] == "string" and option.pop("_unclassified", False):
                if len(uri_kinds) == 1:
                    option["media"] = next(iter(uri_kinds))
                else:
                    option["_unclassified"] = True
        return {"kind": "union", "options": options}

    def string(self, site: Site, in_array: bool) -> JSON:
        node: JSON = {"kind": "string"}
        key = (site.endpoint, site.owner, site.wire)
        kind: str | None
        if key in MEDIA_OVERRIDES:
            self._used_overrides.add(key)
            kind = MEDIA_OVERRIDES[key]
        else:
            kinds = media_from_doc(site.doc)
            if not kinds and site.wire == "uri" and site.parent_type:
                kinds = {site.parent_type}
            if not kinds and in_array:
                # A list of bare strings described as media ("Up to three reference audio clips").
                kinds = {m.lower() for m in _MEDIA_NOUN.findall(site.doc)}
            if len(kinds) > 1:
                self.warn(f"{site.path}: docstring names several media kinds {sorted(kinds)}")
            kind = kinds.pop() if len(kinds) == 1 else None
            if kind is None and SUSPICIOUS_NAME.search(site.wire):
                if in_array:
                    self.warn(f"{site.path}: string items of a media-looking field are unclassified")
                else:
                    # Left for union() to resolve from its sibling options, or to warn about.
                    node["_unclassified"] = True
            named = [k for k in MEDIA_KINDS if k in site.wire.lower()]
            if kind and named and kind not in named:
                self.warn(f"{site.path}: docstring says {kind} but the name says {named[0]}")
        if kind:
            node["media"] = kind
        return node

    # --- bounds and defaults ------------------------------------------------------------------------

    def apply_doc_bounds(self, node: JSON, doc: str) -> None:
        """Put docstring bounds on the field's own type (or the options of its union), by kind."""
        for target in _own_types(node):
            kind = target["kind"]
            bounds: dict[str, Any] | None = None
            if kind in ("integer", "number"):
                bounds = numeric_bounds(doc, integer=kind == "integer")
            elif kind == "string":
                bounds = string_bounds(doc)
            elif kind == "array":
                bounds = item_bounds(doc)
            if bounds:
                target.update(bounds, rangeSource="docstring")

    def apply_reference_ranges(self, endpoint: str, model: str, fields: JSON) -> None:
        for (ep, mod, wire), bounds in REFERENCE_RANGES.items():
            if ep not in ("*", endpoint) or mod not in ("*", model) or wire not in fields:
                continue
            want = ("array",) if bounds.keys() & {"minItems", "maxItems"} else ("integer", "number")
            targets = [t for t in _own_types(fields[wire]["type"]) if t["kind"] in want]
            if not targets:
                self.warn(f"{endpoint}/{model}.{wire}: reference range {bounds} fits no part of its type")
            for target in targets:
                if "rangeSource" not in target:
                    target.update(bounds, rangeSource="reference")
                elif any(target.get(k, v) != v for k, v in bounds.items()):
                    stated = {k: target[k] for k in bounds if k in target}
                    self.warn(f"{endpoint}/{model}.{wire}: docstring says {stated}, reference says {bounds}")

    def default(self, node: JSON, site: Site) -> Any:
        values = []
        for raw in default_candidates(site.doc):
            ok, value = coerce_default(raw, node)
            if ok and value not in values:
                values.append(value)
        # Several stated values mean the default depends on other fields (gen4.5 proresProfile).
        return values[0] if len(values) == 1 else None


_WRAPPERS = (typing_extensions.Required, typing_extensions.NotRequired, typing_extensions.Annotated)
_WRAPPER_NAMES = ("Required", "NotRequired", "Annotated")


def _unwrap_once(tp: Any) -> Any:
    return tp.__origin__ if typing.get_origin(tp) is typing_extensions.Annotated else typing.get_args(tp)[0]


def _strip(tp: Any) -> Any:
    """Drop Required/NotRequired/Annotated wrappers around a type."""
    while typing.get_origin(tp) in _WRAPPERS:
        tp = _unwrap_once(tp)
    return tp


def _own_types(node: JSON) -> list[JSON]:
    """The TYPEs a field's docstring speaks about: the field's type, or each option of its union."""
    return list(node["options"]) if node["kind"] == "union" else [node]


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _media_type_literal(hint: Any) -> str | None:
    if hint is None:
        return None
    tp = _strip(hint)
    values = typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else ()
    return values[0] if len(values) == 1 and values[0] in MEDIA_KINDS else None


# --- entry points -----------------------------------------------------------------------------------


def generate() -> tuple[JSON, list[str]]:
    """The catalogue and the generator's warnings (empty when every field was placed)."""
    require_pinned_sdk()
    builder = CatalogBuilder()
    catalog = builder.build()
    return catalog, builder.warnings


def build_catalog() -> JSON:
    """The catalogue as it should be committed, from the installed (pinned) SDK."""
    return generate()[0]


def render(catalog: JSON) -> str:
    """The exact committed text: sorted keys, two-space indent, final newline."""
    return json.dumps(catalog, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def diff_summary(old: JSON, new: JSON, limit: int = 30) -> list[str]:
    """Human-sized list of what changed, down to the field."""
    lines: list[str] = []
    for key in sorted((old.keys() | new.keys()) - {"endpoints"}):
        if old.get(key) != new.get(key):
            lines.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    old_eps, new_eps = old.get("endpoints", {}), new.get("endpoints", {})
    for ep in sorted(old_eps.keys() | new_eps.keys()):
        if ep not in new_eps or ep not in old_eps:
            lines.append(f"endpoint {ep}: {'removed' if ep not in new_eps else 'added'}")
            continue
        old_models, new_models = old_eps[ep].get("models", {}), new_eps[ep].get("models", {})
        if {k: v for k, v in old_eps[ep].items() if k != "models"} != {
            k: v for k, v in new_eps[ep].items() if k != "models"
        }:
            lines.append(f"endpoint {ep}: metadata changed")
        for model in sorted(old_models.keys() | new_models.keys()):
            if model not in new_models or model not in old_models:
                lines.append(f"{ep}/{model}: {'removed' if model not in new_models else 'added'}")
                continue
            old_fields = old_models[model].get("fields", {})
            new_fields = new_models[model].get("fields", {})
            for wire in sorted(old_fields.keys() | new_fields.keys()):
                if wire not in new_fields:
                    lines.append(f"{ep}/{model}.{wire}: removed")
                elif wire not in old_fields:
                    lines.append(f"{ep}/{model}.{wire}: added")
                elif old_fields[wire] != new_fields[wire]:
                    lines.append(f"{ep}/{model}.{wire}: changed")
            if old_models[model].get("class") != new_models[model].get("class"):
                lines.append(f"{ep}/{model}: class changed")
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
    return lines or ["formatting differs (content is equal); regenerate"]


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None, catalog_path: Path = CATALOG_PATH) -> int:
    parser = argparse.ArgumentParser(description="Generate the model catalogue from the pinned runwayml SDK.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed catalogue is stale")
    args = parser.parse_args(argv)
    try:
        catalog, warnings = generate()
    except SdkVersionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if warnings:
        print(f"{len(warnings)} warning(s); extend the heuristics or tables in {GENERATOR}:", file=sys.stderr)
    for warning in warnings:
        print(f"  warning: {warning}", file=sys.stderr)
    text = render(catalog)
    relative = _shown(catalog_path)
    if args.check:
        try:
            committed = catalog_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            print(f"{relative} is missing; run {GENERATOR}")
            return 1
        if committed == text:
            print(f"{relative} is up to date")
            return 0
        try:
            old = json.loads(committed)
        except json.JSONDecodeError as exc:
            print(f"{relative} is not valid JSON ({exc}); run {GENERATOR}")
            return 1
        print(f"{relative} differs from a fresh generation:")
        for line in diff_summary(old, catalog):
            print(f"  {line}")
        return 1
    catalog_path.parent.mkdir(parents=True, exist_ok=True)
    catalog_path.write_text(text, encoding="utf-8")
    models = sum(len(ep["models"]) for ep in catalog["endpoints"].values())
    print(f"wrote {relative}: {len(catalog['endpoints'])} endpoints, {models} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
