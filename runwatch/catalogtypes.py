"""Walking the catalogue's type specs on a request's behalf.

The catalogue describes each field's type as nested data (``object``, ``array``, ``map``, ``union``,
``string`` with a media kind...). Several request checks need to ask it the same questions: which fields an
object may have, what type sits at a body path, which media kinds a value may be, and which field names an
endpoint's models use at all (for models the catalogue does not know yet). Those questions live here, apart
from the catalogue's own validator, because only the request side asks them. Pure functions; no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runwatch.catalog import Catalog, Endpoint, PathT

__all__ = [
    "EndpointNames",
    "endpoint_names",
    "item_type",
    "map_value_type",
    "media_kinds",
    "object_fields",
    "spec_at",
    "specs_at",
]


def object_fields(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields an object value may have under a type (every object option of a union together)."""
    if spec is None:
        return {}
    if spec["kind"] == "object":
        return dict(spec["fields"])
    out: dict[str, Any] = {}
    if spec["kind"] == "union":
        for option in spec["options"]:
            for name, field in object_fields(option).items():
                out.setdefault(name, field)
    return out


def item_type(spec: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The item type of a list value under a type."""
    if spec is None:
        return None
    if spec["kind"] == "array":
        items: Mapping[str, Any] = spec["items"]
        return items
    if spec["kind"] == "union":
        found = [i for o in spec["options"] if (i := item_type(o)) is not None]
        return found[0] if len(found) == 1 else ({"kind": "union", "options": found} if found else None)
    return None


def map_value_type(spec: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if spec is None:
        return None
    if spec["kind"] == "map":
        values: Mapping[str, Any] = spec["values"]
        return values
    if spec["kind"] == "union":
        return next((v for o in spec["options"] if (v := map_value_type(o)) is not None), None)
    return None


def spec_at(top: Mapping[str, Any], path: PathT) -> Mapping[str, Any] | None:
    spec: Mapping[str, Any] | None = top
    for part in path:
        if isinstance(part, int):
            spec = item_type(spec)
        else:
            field = object_fields(spec).get(part)
            spec = field["type"] if field else map_value_type(spec)
        if spec is None:
            return None
    return spec


def specs_at(spec: Mapping[str, Any], path: PathT) -> list[Mapping[str, Any]]:
    """Every type a value at ``path`` may have, following each option of every union."""
    kind = spec["kind"]
    if kind == "union":
        return [found for option in spec["options"] for found in specs_at(option, path)]
    if not path:
        return [spec]
    part, rest = path[0], path[1:]
    if isinstance(part, int) and kind == "array":
        return specs_at(spec["items"], rest)
    if isinstance(part, str) and kind == "object" and part in spec["fields"]:
        return specs_at(spec["fields"][part]["type"], rest)
    if isinstance(part, str) and kind == "map":
        return specs_at(spec["values"], rest)
    return []


def media_kinds(spec: Mapping[str, Any]) -> set[str]:
    """Kinds of media a value of this type may be directly (through unions and lists, not objects)."""
    if spec["kind"] == "string":
        return {spec["media"]} if spec.get("media") else set()
    if spec["kind"] == "union":
        return set().union(*(media_kinds(o) for o in spec["options"]))
    if spec["kind"] == "array":
        return media_kinds(spec["items"])
    return set()


def _nested(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The field tables of every object reachable inside a type."""
    kind = spec["kind"]
    if kind == "object":
        return [spec["fields"]]
    if kind == "union":
        return [f for o in spec["options"] for f in _nested(o)]
    if kind == "array":
        return _nested(spec["items"])
    if kind == "map":
        return _nested(spec["values"])
    return []


@dataclass(frozen=True)
class EndpointNames:
    """Field names of one endpoint's models (media names of the whole catalogue), for unknown models' bodies."""

    wire: frozenset[str]
    python: Mapping[str, str]  # snake_case -> wire
    media: Mapping[str, frozenset[str]]  # wire name of a media field -> the kinds it takes somewhere


@functools.lru_cache(maxsize=64)
def endpoint_names(catalog: Catalog, endpoint: str) -> EndpointNames:
    def collect(eps: list[Endpoint]) -> tuple[set[str], dict[str, str], dict[str, frozenset[str]]]:
        wire: set[str] = set()
        python: dict[str, str] = {}
        media: dict[str, set[str]] = {}
        tables = [m.fields for ep in eps for m in ep.models.values()]
        while tables:
            for name, field in tables.pop().items():
                wire.add(name)
                if field.get("python") and field["python"] != name:
                    python.setdefault(field["python"], name)
                if kinds := media_kinds(field["type"]):
                    media.setdefault(name, set()).update(kinds)
                tables.extend(_nested(field["type"]))
        return wire, python, {k: frozenset(v) for k, v in media.items()}

    wire, python, media = collect([catalog.endpoints[endpoint]])
    # A new model may take media under a name only other endpoints use so far (videoUri, audioUri).
    _, _, everywhere = collect(list(catalog.endpoints.values()))
    return EndpointNames(frozenset(wire), python, {**everywhere, **media})
