"""The trainers' fields as plain data: a type annotation as options, a value checked (and
YAML's strings coerced) against them, and the JSON Schema an editor reads."""

from __future__ import annotations

import enum
from typing import Literal

import pytest

from sweep.errors import SpecError
from sweep.spec.catalogue import coerce, describe, json_schema_of, options


class Strategy(enum.Enum):
    NO = "no"
    STEPS = "steps"


def test_annotations_become_options_and_values_are_checked_against_them():
    number = options(float | None)
    assert [o["t"] for o in number] == ["float", "none"]
    assert coerce("train.x", "5e-4", number) == 5e-4  # YAML 1.1 reads 5e-4 (no dot) as a string
    assert coerce("train.x", 5, number) == 5 and isinstance(coerce("train.x", 5, number), int)
    assert coerce("train.x", None, number) is None
    with pytest.raises(SpecError, match="expected float or null") as e:
        coerce("train.x", "nan", number)  # parses as a float; no field means it
    assert e.value.field == "train.x"
    with pytest.raises(SpecError):
        coerce("train.x", True, options(int))  # a bool is no int


def test_enums_literals_and_lists_of_items():
    strategy = options(Strategy | str)
    assert coerce("train.eval_strategy", "steps", strategy) == "steps"
    with pytest.raises(SpecError, match="one of no, steps"):
        coerce("train.eval_strategy", "epoch", strategy)
    assert coerce("train.loss_type", "ipo", options(list[str])) == "ipo"  # a lone item is taken
    assert coerce("lora.target_modules", ["q", "v"], options(list[str])) == ["q", "v"]
    with pytest.raises(SpecError):
        coerce("lora.target_modules", ["q", 1], options(list[str]))
    assert describe(options(Literal["a", "b"])) == "one of a, b"


def test_the_json_schema_of_a_field_takes_what_coerce_takes():
    assert json_schema_of(options(float | None)) == {"anyOf": [{"type": "number"}, {"type": "null"}]}
    assert json_schema_of(options(list[str])) == {
        "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]
    }
    assert json_schema_of(options(Strategy)) == {"enum": ["no", "steps"]}
    assert json_schema_of(options(object)) == {}  # a type the library checks itself: anything goes
