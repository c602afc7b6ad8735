"""What the trainers' configs accept, as plain data: every field of the loss families'
TRL configs (families.py), of PEFT's LoraConfig and of transformers' BitsAndBytesConfig,
each with its type as a list of options.

Checking a spec needs only this, not the libraries. Importing TRL and PEFT costs a process
seconds of CPU, which a sweep's driver would spend while its Ray workers import the same stack
for the trials (on a small machine the start-up is bound by that CPU). So the catalogue is read from the
installed libraries once per set of their versions and cached as JSON beside the builtin
model (`catalogue-<key>.json` in builtin.cache_root()); a new version of any of them makes a
new key. A cache that cannot be written is not an error: the catalogue is rebuilt next time.

An option is a dict {"t": kind, "name": how an error names it}, kind one of
none, bool, int, float, str, any, dict, other (a type the library checks itself),
enum and literal (with "values"), list (with "item": an option, or None for any item).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import importlib.metadata
import inspect
import json
import math
import os
import sys
import types
import typing
from typing import Any

from ..builtin import cache_root
from ..errors import SpecError
from ..files import write_atomic

FORMAT = 1  # bump when the option format or what is read changes
LIBRARIES = ("trl", "peft", "transformers")
_SCALARS = {type(None): "none", bool: "bool", int: "int", float: "float", str: "str", dict: "dict"}


def options(annotation: Any) -> list[dict[str, Any]]:
    """A type annotation as the options a value may match ([] where there is none to check)."""
    if annotation is inspect.Parameter.empty or annotation is None:
        return []
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [o for a in typing.get_args(annotation) for o in options(a)]
    return [_option(annotation)]


def _option(a: Any) -> dict[str, Any]:
    name = getattr(a, "__name__", str(a)).replace("typing.", "")
    origin = typing.get_origin(a)
    if a is Any:
        return {"t": "any", "name": "Any"}
    if a in _SCALARS:
        return {"t": _SCALARS[a], "name": name}
    if isinstance(a, type) and issubclass(a, enum.Enum):
        return {"t": "enum", "name": name, "values": [m.value for m in a]}
    if origin is typing.Literal:
        return {"t": "literal", "name": name, "values": list(typing.get_args(a))}
    if origin in (list, tuple, set) or a in (list, tuple):
        args = typing.get_args(a)
        item = _option(args[0]) if args and args[0] is not Any else None
        return {"t": "list", "name": name, "item": item}
    if origin is dict:
        return {"t": "dict", "name": name}
    return {"t": "other", "name": name}  # a union inside a list, a config object: the library judges


@functools.cache
def catalogue(families: tuple[tuple[str, str], ...]) -> dict[str, dict[str, Any]]:
    """{"families": {family: {field: options}}, "lora": {field: options}, "quantization": {...}};
    `families`: (family, "module:ConfigClass") pairs (families.py)."""
    # What the content depends on: the libraries' versions and which config each family reads.
    key = [
        FORMAT,
        sys.version_info[:2],
        [importlib.metadata.version(lib) for lib in LIBRARIES],
        dict(families),
    ]
    path = cache_root() / f"catalogue-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    built = _read_libraries(families)
    text = json.dumps(built)
    if json.loads(text) == built:  # every enum value and literal survives JSON
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, text)  # sweeps starting together never read half a file
        except OSError:
            pass
    return built


def import_path(path: str) -> Any:
    """The object a "module:Name" path names."""
    # trl.experimental warns on import that its APIs may change: we pin TRL, so say it once here.
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _read_libraries(families: tuple[tuple[str, str], ...]) -> dict[str, dict[str, Any]]:
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    def fields(hints: dict[str, Any]) -> dict[str, list]:
        return {name: options(annotation) for name, annotation in hints.items()}

    bnb = inspect.signature(BitsAndBytesConfig.__init__).parameters
    return {
        "families": {name: fields(typing.get_type_hints(import_path(config))) for name, config in families},
        "lora": fields(typing.get_type_hints(LoraConfig)),
        "quantization": fields({n: p.annotation for n, p in bnb.items() if n not in ("self", "kwargs")}),
    }


# ---- checking a value against a field's options -------------------------------------


def coerce(where: str, value: Any, opts: list[dict[str, Any]]) -> Any:
    """Check a value against a field's options (catalogue.py), coercing YAML's '5e-4' strings."""
    kinds = [o["t"] for o in opts]
    if value is None:
        if "none" in kinds or not opts:
            return None
        raise SpecError(where, f"must not be empty; expected {describe(opts)}")
    if not opts or "any" in kinds:
        return value
    enums = [o for o in opts if o["t"] == "enum"]
    if enums and isinstance(value, str):  # `IntervalStrategy | str`: the str must still be a member
        if value not in [v for e in enums for v in e["values"]]:
            raise SpecError(where, f"expected {describe(enums)}, got {value!r}")
        return value
    for opt in opts:
        ok, coerced = _matches(value, opt)
        if ok:
            return coerced
    raise SpecError(where, f"expected {describe(opts)}, got {type(value).__name__} {value!r}")


def _matches(value: Any, opt: dict[str, Any]) -> tuple[bool, Any]:
    kind = opt["t"]
    if kind == "none":
        return value is None, None
    if kind == "bool":
        return isinstance(value, bool), value
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, value  # an int stays an int (logging_steps: 5, not 5.0)
        if isinstance(value, str):  # YAML 1.1 reads `5e-4` (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                return False, None
            return math.isfinite(number), number  # float("nan") parses; no field means it
        return False, None
    if kind == "str":
        return isinstance(value, str), value
    if kind in ("enum", "literal"):
        return value in opt["values"], value
    if kind == "list":
        item = opt["item"]
        if not isinstance(value, list):  # TRL/PEFT accept a lone item, e.g. loss_type: ipo
            return _matches(value, item) if item else (False, None)
        if item:
            converted = []
            for v in value:
                ok, c = _matches(v, item)
                if not ok:
                    return False, None
                converted.append(c)
            return True, converted
        return True, value
    if kind == "dict":
        return isinstance(value, dict), value
    return True, value  # an exotic annotation (a config object): let the library judge


def describe(opts: list[dict[str, Any]]) -> str:
    parts = []
    for o in opts:
        if o["t"] == "none":
            parts.append("null")
        elif o["t"] in ("enum", "literal"):
            parts.append("one of " + ", ".join(map(str, o["values"])))
        else:
            parts.append(o["name"])
    return " or ".join(dict.fromkeys(parts))


def json_schema_of(opts: list[dict[str, Any]]) -> dict[str, Any]:
    """A field's options as JSON Schema (what an editor completes and checks in YAML)."""
    schemas = [_option_schema(o) for o in opts]
    if not schemas or {} in schemas:
        return {}
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def _option_schema(opt: dict[str, Any] | None) -> dict[str, Any]:
    kind = opt["t"] if opt else "any"
    simple = {"none": "null", "bool": "boolean", "int": "integer", "float": "number", "str": "string", "dict": "object"}
    if kind in simple:
        return {"type": simple[kind]}
    if kind in ("enum", "literal"):
        return {"enum": opt["values"]}
    if kind == "list":  # a lone item is taken too (loss_type: ipo)
        item = _option_schema(opt["item"])
        return {"anyOf": [{"type": "array", "items": item}, item]} if item else {"type": "array"}
    return {}
