"""The model catalogue: every task endpoint, model and field of the pinned official SDK, as data.

The data file (``runwatch/data/catalog.json``, format in ``docs/catalog-format.md``) is generated from the
SDK's types by ``tools/gen_catalog.py``. This module loads it and validates request bodies against it.
One validator serves both sides: the simulator turns its issues into Runway's error body, and runwatch's
pre-flight check turns them into a rejected request's status file, so the two can never disagree.

Issues follow the shape Runway's API returns (Zod-style ``code``, ``path``, ``message`` and code-specific
members such as ``expected``, ``values``, ``maximum``), so they can be sent as they are.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from runwatch.errors import CatalogError

__all__ = [
    "Catalog",
    "Endpoint",
    "Issue",
    "MediaRef",
    "Model",
    "Validation",
    "load_catalog",
]

PathT = tuple[str | int, ...]


@dataclass(frozen=True)
class Issue:
    """One problem with a request body, in the shape of Runway's ``issues[]`` entries."""

    code: str
    path: PathT
    message: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The issue as Runway writes it in a 400 body."""
        out: dict[str, Any] = {"code": self.code, **self.extra, "path": list(self.path), "message": self.message}
        return out

    @property
    def dotted(self) -> str:
        """The path as a human reads it: ``promptImage[0].uri``."""
        return format_path(self.path)


@dataclass(frozen=True)
class MediaRef:
    """A media reference found while validating: where it is, what kind it must be, its value."""

    path: PathT
    kind: str
    value: str


@dataclass(frozen=True)
class Validation:
    """The result of validating one body: its issues and the media references it holds."""

    model: str | None
    issues: tuple[Issue, ...]
    media: tuple[MediaRef, ...]

    @property
    def ok(self) -> bool:
        return not self.issues


@dataclass(frozen=True)
class Model:
    endpoint: str
    name: str
    sdk_class: str
    fields: Mapping[str, Any]

    def wire_name(self, name: str) -> str | None:
        """The wire name of a field given either spelling (``prompt_text`` or ``promptText``)."""
        if name in self.fields:
            return name
        for wire, spec in self.fields.items():
            if spec.get("python") == name:
                return wire
        return None


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    output: str
    models: Mapping[str, Model]


def format_path(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _received(value: Any) -> str:
    """The JSON type name of a value, as Zod names it in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "undefined"


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2  # lone surrogates count, never crash


def _json_literal(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class _Walker:
    """Walks one body against one model's type tree, collecting issues and media references."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self.media: list[MediaRef] = []

    def issue(self, code: str, path: PathT, message: str, **extra: Any) -> None:
        self.issues.append(Issue(code, path, message, extra))

    def fields(self, fields: Mapping[str, Any], value: Any, path: PathT) -> None:
        if not isinstance(value, dict):
            self.issue(
                "invalid_type",
                path,
                f"Invalid input: expected object, received {_received(value)}",
                expected="object",
            )
            return
        unknown = [k for k in value if k not in fields]
        for name, spec in fields.items():
            if name not in value:
                if spec.get("required"):
                    expected = _expected_name(spec["type"])
                    self.issue(
                        "invalid_type",
                        (*path, name),
                        f"Invalid input: expected {expected}, received undefined",
                        expected=expected,
                    )
                continue
            self.check(spec["type"], value[name], (*path, name))
        if unknown:
            keys = ", ".join(_json_literal(k) for k in unknown)
            noun = "key" if len(unknown) == 1 else "keys"
            self.issue("unrecognized_keys", path, f"Unrecognized {noun}: {keys}", keys=unknown)

    def check(self, spec: Mapping[str, Any], value: Any, path: PathT) -> None:
        kind = spec["kind"]
        method = getattr(self, f"_check_{kind}", None)
        if method is None:
            raise CatalogError(f"catalogue type kind {kind!r} is not known")
        method(spec, value, path)

    def _type_error(self, expected: str, value: Any, path: PathT) -> None:
        self.issue(
            "invalid_type",
            path,
            f"Invalid input: expected {expected}, received {_received(value)}",
            expected=expected,
        )

    def _check_any(self, spec: Mapping[str, Any], value: Any, path: PathT) -> None:
        return

    def _check_null(self, spec: Mapping[str, Any], value: Any, path: PathT) -> None:
        if value is not None:
            self._type_error("null", value, path)

    def _check_boolean(self, spec: Mapping[str, Any], value: Any, path: PathT) -> None:
        if not isinstance(value, bool):
            self._type_error("boolean", value, path)

    def _check_integer(self, spec: Mapping[str, Any], value: Any, path: PathT) -> None:
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            is_int = True  # JSON has one number type; 5.0 is the integer 5 on the wire
        if not is_int:
            self._type_error("int" if _received(value) == "number" else "number", value, path)
            return
        self._bounds(spec, value, path, "number", "")

    def _check_number(self, spec: Mapping[str, Any], value: Any, path: PathT) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            self._type_error("number", value, path)
            return
        self._bounds(spec, value, path, "number", "")

    def _bounds(self, spec: Mapping[str, Any], size: float, path: PathT, origin: str, unit: str) -> None:
        lo_key, hi_key = {
            "number": ("minimum", "maximum"),
            "string": ("minLength", "maxLength"),
            "array": ("minItems", "maxItems"),
        }[origin]
        lo, hi = spec.get(lo_key), spec.get(hi_key)
        what = {"number": "number to be", "string": "string to have", "array": "array to have"}[origin]
        if lo is not None and size < lo:
            self.issue(
                "too_small",
                path,
                f"Too small: expected {what} >={lo}{unit}",
                origin=origin,
                minimum=lo,
                inclusive=True,
            )
        if hi is not None and size > hi:
            self.issue(
                "too_big",
                path,
                f"Too big: expected {what} <={hi}{unit}",
                origin=origin,
                maximum=hi,
                inclusive=True,
            )

    def _check_string(self, spec: Mapping[str, Any], value: Any, path: PathT) -> None:
        if not isinstance(value, str):
            self._type_error("string", value, path)
            return
        size = _utf16_len(value) if spec.get("lengthUnit") == "utf16" else len(value)
        self._bounds(spec, size, path, "string", " characters")
        media = spec.get("media")
        if media:
            self.media.append(MediaRef(path, media, value))

    def _check_literal(self, spec: Mapping[str, Any], value: Any, path: PathT) -> None:
        values = spec["values"]
        if any(type(value) is type(v) and value == v for v in values):
            return
        shown = "|".join(_json_literal(v) for v in values)
        message = f"Invalid input: expected {shown}" if len(values) == 1 else f"Invalid option: expected one of {shown}"
        self.issue("invalid_value", path, message, values=list(values))

    def _check_array(self, spec: Mapping[str, Any], value: Any, path: PathT) -> None:
        if not isinstance(value, list):
            self._type_error("array", value, path)
            return
        self._bounds(spec, len(value), path, "array", " items")
        for i, item in enumerate(value):
            self.check(spec["items"], item, (*path, i))

    def _check_map(self, spec: Mapping[str, Any], value: Any, path: PathT) -> None:
        if not isinstance(value, dict):
            self._type_error("record", value, path)
            return
        for key, item in value.items():
            self.check(spec["values"], item, (*path, key))

    def _check_object(self, spec: Mapping[str, Any], value: Any, path: PathT) -> None:
        self.fields(spec["fields"], value, path)

    def _check_union(self, spec: Mapping[str, Any], value: Any, path: PathT) -> None:
        options: list[Mapping[str, Any]] = spec["options"]
        attempts: list[_Walker] = []
        for option in options:
            trial = _Walker()
            trial.check(option, value, path)
            if not trial.issues:
                self.media.extend(trial.media)
                return
            attempts.append(trial)
        # Report the one option that fits the value's shape, as a person would want to read it;
        # only a value that fits no option or several gets Zod's generic union issue.
        fitting = [t for o, t in zip(options, attempts, strict=True) if _shape_fits(o, value)]
        if len(fitting) == 1:
            self.issues.extend(fitting[0].issues)
            return
        self.issue(
            "invalid_union",
            path,
            "Invalid input",
            errors=[[i.to_json() for i in t.issues] for t in attempts],
        )


def _shape_fits(spec: Mapping[str, Any], value: Any) -> bool:
    """Whether a value is of the JSON shape an option expects (and, for objects, its discriminator)."""
    kind = spec["kind"]
    if kind == "object":
        if not isinstance(value, dict):
            return False
        for name, fspec in spec["fields"].items():  # a literal field such as `type` discriminates
            ftype = fspec["type"]
            if ftype["kind"] == "literal" and fspec.get("required") and name in value:
                return value[name] in ftype["values"]
        return True
    if kind == "union":
        return any(_shape_fits(o, value) for o in spec["options"])
    return {
        "string": isinstance(value, str),
        "array": isinstance(value, list),
        "map": isinstance(value, dict),
        "boolean": isinstance(value, bool),
        "null": value is None,
        "any": True,
        "integer": isinstance(value, int | float) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "literal": any(type(value) is type(v) for v in spec.get("values", [])),
    }.get(kind, False)


def _expected_name(spec: Mapping[str, Any]) -> str:
    kind = spec["kind"]
    if kind == "literal":
        return "|".join(_json_literal(v) for v in spec["values"])
    if kind == "integer":
        return "number"
    if kind == "union":
        return "|".join(dict.fromkeys(_expected_name(o) for o in spec["options"]))
    return str(kind)


class Catalog:
    """The loaded catalogue: endpoints, their models, and validation of bodies against them."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        try:
            self.sdk_version: str = data["sdk"]["version"]
            self.endpoints: dict[str, Endpoint] = {}
            for name, ep in data["endpoints"].items():
                models = {mname: Model(name, mname, m["class"], m["fields"]) for mname, m in ep["models"].items()}
                self.endpoints[name] = Endpoint(name, ep["path"], ep["output"], models)
        except (KeyError, TypeError) as exc:
            raise CatalogError(f"the model catalogue is malformed: {exc!r}") from exc

    def model(self, endpoint: str, model: str) -> Model | None:
        ep = self.endpoints.get(endpoint)
        return ep.models.get(model) if ep else None

    def validate(self, endpoint: str, body: Any) -> Validation:
        """Validate a body for an endpoint as the API does: by its ``model``, then its fields."""
        ep = self.endpoints.get(endpoint)
        if ep is None:
            raise CatalogError(f"unknown endpoint {endpoint!r}")
        walker = _Walker()
        if not isinstance(body, dict):
            walker.issue(
                "invalid_type",
                (),
                f"Invalid input: expected object, received {_received(body)}",
                expected="object",
            )
            return Validation(None, tuple(walker.issues), ())
        model_name = body.get("model")
        model = ep.models.get(model_name) if isinstance(model_name, str) else None
        if model is None:
            if not isinstance(model_name, str):
                walker._type_error("string", model_name if "model" in body else _Missing, ("model",))
            walker.issue(
                "invalid_union",
                ("model",),
                "Invalid input",
                note="No matching discriminator",
                discriminator="model",
                errors=[],
            )
            return Validation(model_name if isinstance(model_name, str) else None, tuple(walker.issues), ())
        walker.fields(model.fields, body, ())
        return Validation(model.name, tuple(walker.issues), tuple(walker.media))


class _MissingType:
    pass


_Missing = _MissingType()  # a value whose JSON type name is "undefined"


@functools.cache
def load_catalog() -> Catalog:
    """The catalogue shipped in the package (loaded once)."""
    try:
        text = resources.files("runwatch.data").joinpath("catalog.json").read_text("utf-8")
        return Catalog(json.loads(text))
    except (OSError, ValueError) as exc:
        raise CatalogError(f"cannot read the model catalogue: {exc}") from exc
