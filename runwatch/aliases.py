"""A request body as the API will get it: field aliases resolved, the inbox's defaults underneath.

People write fields the way the SDK spells them (``prompt_text``) as well as the wire names
(``promptText``); both sides of a request, the inbox's ``defaults`` and the file, are renamed to wire names
(following the model's types when the catalogue knows the model, by the endpoint's names and camelCase
otherwise), then merged with the file on top. A field given under two spellings is a problem, not a guess.
Apart from the checks because it decides what the body *is*; the checks then say whether it is allowed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

from runwatch.catalog import PathT
from runwatch.catalogtypes import EndpointNames, item_type, map_value_type, object_fields
from runwatch.requestproblems import Problems, show

__all__ = ["merge", "plain", "resolve_generic", "resolve_known"]

_SNAKE_RE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")


def plain(value: Any) -> Any:
    """A deep copy of config values as plain JSON containers (read-only mappings and tuples included)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def resolve_known(value: Any, spec: Mapping[str, Any] | None, path: PathT, problems: Problems) -> Any:
    """A copy of ``value`` with the SDK's snake_case keys renamed to wire names, following the model's types."""
    if isinstance(value, dict):
        fields = object_fields(spec)
        if fields:
            aliases = {f["python"]: w for w, f in fields.items() if f.get("python") and f["python"] != w}

            def wire_of(key: str) -> tuple[str, Mapping[str, Any] | None]:
                wire = key if key in fields else aliases.get(key, key)
                return wire, fields[wire]["type"] if wire in fields else None

            return _rename(value, wire_of, path, problems, lambda v, s, p: resolve_known(v, s, p, problems))
        values = map_value_type(spec)  # a map's keys are data, never renamed
        return {k: resolve_known(v, values, (*path, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        items = item_type(spec)
        return [resolve_known(v, items, (*path, i), problems) for i, v in enumerate(value)]
    return value


def resolve_generic(value: Any, names: EndpointNames, path: PathT, problems: Problems) -> Any:
    """Aliases for a model the catalogue does not know: names the endpoint knows, else snake_case -> camelCase."""
    if isinstance(value, dict):

        def wire_of(key: str) -> tuple[str, Mapping[str, Any] | None]:
            if key in names.wire:
                return key, None
            if key in names.python:
                return names.python[key], None
            return (_camel(key) if _SNAKE_RE.match(key) else key), None

        return _rename(value, wire_of, path, problems, lambda v, s, p: resolve_generic(v, names, p, problems))
    if isinstance(value, list):
        return [resolve_generic(v, names, (*path, i), problems) for i, v in enumerate(value)]
    return value


def _rename(
    value: dict[str, Any],
    wire_of: Callable[[str], tuple[str, Mapping[str, Any] | None]],
    path: PathT,
    problems: Problems,
    recurse: Callable[[Any, Mapping[str, Any] | None, PathT], Any],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, item in value.items():
        wire, spec = wire_of(key)
        if wire in out:
            problems.add(
                (*path, wire),
                f"is given twice, as {show(spelled[wire])} and {show(key)}; write it once, as {show(wire)}",
            )
            continue
        spelled[wire] = key
        out[wire] = recurse(item, spec, (*path, wire))
    return out


def merge(under: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``under``; objects are merged key by key, everything else is replaced."""
    out = copy.deepcopy(under)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
