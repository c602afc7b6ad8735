"""`--set key=value` overrides of a spec, as torchtune's and Hydra's `key=value` do.

`train.max_steps=5` sets a nested field; `axes.beta=[0.1,0.5]` replaces an axis; values are
YAML (so `5` is an int, `[a,b]` a list, `null` clears). They are applied to the spec's YAML
before validation, so an override is checked exactly like the file.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

from ..errors import SpecError
from . import strict_yaml


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value parsed as YAML)."""
    key, sep, value = text.partition("=")
    path = [part.strip() for part in key.split(".")]
    if not sep or not all(path):
        raise SpecError("--set", f"expects KEY=VALUE with a dotted KEY (e.g. train.max_steps=5), got {text!r}")
    if not value.strip():
        return path, ""
    try:
        return path, strict_yaml.load(value, "--set")
    except SpecError as e:
        raise SpecError(
            "--set", f"{key}: the value {value!r} is not valid YAML ({e.message}; quote strings, e.g. '[0.1, 0.5]')"
        ) from None


def apply_overrides(raw: Any, overrides: Iterable[str]) -> Any:
    """A copy of the spec's YAML mapping with each `key=value` applied in order."""
    overrides = list(overrides)
    if not overrides:
        return raw
    if not isinstance(raw, dict):
        raise SpecError("spec", "must be a YAML mapping with at least `name`")
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise SpecError("--set", f"{'.'.join(path)}: {where} is {child!r} in the spec, not a mapping")
            node = child
        node[path[-1]] = value
    return out
