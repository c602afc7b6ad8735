"""Reading the schema at a pydantic error's location, for error messages: the field names a
section takes, the choices a field has."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Annotated, Any, Literal

from typing_extensions import is_typeddict

from .schema import USER_FIELDS, SweepSpec


def annotation_at(loc: typing.Sequence[Any]) -> Any:
    """The type annotation at a pydantic error location (None where the schema is open)."""
    annotation: Any = SweepSpec
    loc = [p for i, p in enumerate(loc) if loc[i + 1 : i + 2] != ("[key]",) and loc[i + 1 : i + 2] != ["[key]"]]
    for part in loc:
        annotation = _unwrap(annotation)
        if dataclasses.is_dataclass(annotation) or is_typeddict(annotation):
            annotation = typing.get_type_hints(annotation, include_extras=True).get(part)
        elif typing.get_origin(annotation) is dict:
            key, value = typing.get_args(annotation)
            annotation = key if part == "[key]" else value
        elif typing.get_origin(annotation) is list and isinstance(part, int):
            annotation = typing.get_args(annotation)[0]
        else:
            return None
    return _unwrap(annotation)


def fields_at(loc: typing.Sequence[Any]) -> list[str]:
    """The field names a section at `loc` takes."""
    annotation = annotation_at(loc)
    if annotation is SweepSpec:
        return USER_FIELDS
    if dataclasses.is_dataclass(annotation) or is_typeddict(annotation):
        return list(typing.get_type_hints(annotation))
    return []


def choices_at(loc: typing.Sequence[Any]) -> list[Any]:
    """The values a Literal field at `loc` takes ([] where it is not one)."""
    annotation = annotation_at(loc)
    return list(typing.get_args(annotation)) if typing.get_origin(annotation) is Literal else []


def _unwrap(annotation: Any) -> Any:
    """`Annotated[X, ...]` and `X | None` as X."""
    while True:
        if typing.get_origin(annotation) is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation
