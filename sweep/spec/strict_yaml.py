"""YAML as a person writes a spec: safe tags only, and refused where the file says something
no person means — a key given twice (YAML lets the last one win silently), aliases used
more than a few times (a "billion laughs" file expands on the first JSON dump), nesting
deeper than any spec needs (PyYAML's composer recurses: a deep file ends in a
RecursionError), a file larger than any spec. Each is one `SpecError` line naming where."""

from __future__ import annotations

import re
from typing import Any

import yaml

from ..errors import SpecError

MAX_BYTES = 1 << 20  # a spec is a page of YAML; a megabyte is a mistake (a data file?)
MAX_DEPTH = 32  # the deepest a spec goes is ~5 (axes.x.{loguniform: [...]})
MAX_ALIASES = 64


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: SafeLoader says so itself
                break
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads `5e-4` and `1e3`, numbers in YAML 1.2 and to every editor, as strings.
_StrictLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load(text: str, field: str = "spec", what: str = "invalid YAML") -> Any:
    """`text` parsed as YAML, or a SpecError on `field`: `what` and where, in one line."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise SpecError(field, f"{what}: larger than {MAX_BYTES >> 20} MB; a spec is a page of YAML")
    try:
        _check_shape(text, field, what)
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(field, f"{what}{where}: {problem}") from None


def _check_shape(text: str, field: str, what: str) -> None:
    """Depth and aliases, from the parser's events (it does not recurse, the composer does)."""
    depth = aliases = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1
                raise SpecError(field, f"{what} at line {line}: nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                line = event.start_mark.line + 1
                raise SpecError(field, f"{what} at line {line}: more than {MAX_ALIASES} aliases (*name)")
