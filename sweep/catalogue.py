"""What the trainers' configs accept, as plain data: every field of the loss families'
TRL configs (families.py), of PEFT's LoraConfig and of transformers' BitsAndBytesConfig,
each with its type as a list of options.

Checking a spec needs only this, not the libraries. Importing TRL and PEFT costs a process
~3 CPU-s, which a sweep's driver would spend while its Ray workers import the same stack for
the trials (on 2 cores the start-up is bound by that CPU). So the catalogue is read from the
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
import os
import sys
import tempfile
import types
import typing
from typing import Any

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
def catalogue() -> dict[str, dict[str, Any]]:
    """{"families": {family: {field: options}}, "lora": {field: options}, "quantization": {...}}."""
    from .builtin import cache_root
    from .families import FAMILIES

    # What the content depends on: the libraries' versions and which config each family reads.
    key = [FORMAT, sys.version_info[:2], [importlib.metadata.version(lib) for lib in LIBRARIES],
           {name: f.config for name, f in FAMILIES.items()}]  # fmt: skip
    path = cache_root() / f"catalogue-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    built = _read_libraries()
    text = json.dumps(built)
    if json.loads(text) == built:  # every enum value and literal survives JSON
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".catalogue-")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)  # atomic: sweeps starting together never read half a file
        except OSError:
            pass
    return built


def _read_libraries() -> dict[str, dict[str, Any]]:
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    from .families import FAMILIES

    def fields(hints: dict[str, Any]) -> dict[str, list]:
        return {name: options(annotation) for name, annotation in hints.items()}

    bnb = inspect.signature(BitsAndBytesConfig.__init__).parameters
    return {
        "families": {name: fields(typing.get_type_hints(f.config_class())) for name, f in FAMILIES.items()},
        "lora": fields(typing.get_type_hints(LoraConfig)),
        "quantization": fields({n: p.annotation for n, p in bnb.items() if n not in ("self", "kwargs")}),
    }
