"""The spec's schema, tried the way a careless or hostile user would: generated specs that
break each rule the schema declares (a wrong type, a number out of range, a choice not
offered, an unknown key, NaN or infinity anywhere) each end in one SpecError naming the
field, and `plan`/`run` in exit 2 with one line, no traceback and nothing written. The
rules are read from the schema itself, so a field added to it is tried too."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweep import cli
from sweep.spec.export import full_json_schema
from sweep.spec.load import SpecError, parse_spec
from sweep.spec.schema import json_schema
from tests.conftest import REPO

SCHEMA = json_schema()


BASE = {
    "name": "prop",
    "axes": {"beta": [0.1, 0.5]},
    "train": {"max_steps": 2},
    "judge": {"prompts": 2, "scorers": ["builtin:verifiable"], "generation": {"do_sample": False}},
}


def _fields(props: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(dotted path, JSON Schema) of every field the schema declares, sections included."""
    out = []
    for name, prop in props.items():
        path = f"{prefix}{name}"
        if "$ref" in prop:
            section = SCHEMA["$defs"][prop["$ref"].rsplit("/", 1)[1]]
            out.append((path, {"type": "object", "section": True}))
            out += _fields(section["properties"], f"{path}.")
        else:
            out.append((path, prop))
    return out


FIELDS = _fields(SCHEMA["properties"])


SECTIONS = [""] + [path for path, prop in FIELDS if prop.get("section")]


def _kinds(prop: dict[str, Any]) -> set[str]:
    if "enum" in prop:
        return {"enum"}
    if "anyOf" in prop:
        return set().union(*(_kinds(p) for p in prop["anyOf"]))
    return {prop.get("type", "any")}


# A value of each JSON type, to put where another type belongs (`true` is no count, `1` no switch).
WRONG = {
    "integer": [True, "3", 1.5, [1], {"a": 1}],
    "number": [True, "fast", [1.0], {"a": 1}],
    "boolean": [1, 0.0, "yes", [True]],
    "string": [5, 2.5, True, ["a"], {"a": "b"}],
    "array": [5, "x", {"a": 1}],
    "object": [5, "x", [1]],
    "enum": [5, "zz-not-a-choice", [1]],
}


@st.composite
def wrong_types(draw):
    path, prop = draw(st.sampled_from([f for f in FIELDS if _kinds(f[1]) - {"null", "any"}]))
    kinds = _kinds(prop) - {"null"}
    candidates = [v for k in sorted(kinds) for v in WRONG.get(k, [])]
    allowed = {json.dumps(v) for v in prop.get("enum", [])}
    value = draw(st.sampled_from([v for v in candidates if not _fits(v, kinds) and json.dumps(v) not in allowed]))
    return path, value, ("must", "unknown")


def _fits(value: Any, kinds: set[str]) -> bool:
    """Whether `value` is of one of the JSON types (an int is a number too; a bool is neither)."""
    checks = {
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "string": lambda v: isinstance(v, str),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    return any(checks[k](value) for k in kinds if k in checks)


@st.composite
def out_of_range(draw):
    def bounds(prop):
        for p in [prop, *prop.get("anyOf", [])]:
            if any(k in p for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")):
                return p
        return None

    path, prop = draw(st.sampled_from([(p, bounds(s)) for p, s in FIELDS if bounds(s)]))
    whole = prop.get("type") == "integer"
    step = draw(st.integers(1, 1000)) if whole else draw(st.floats(0, 1e6, allow_nan=False))
    low = [prop[k] - (step if k == "minimum" else 0) for k in ("minimum", "exclusiveMinimum") if k in prop]
    high = [prop[k] + (step if k == "maximum" else 0) for k in ("maximum", "exclusiveMaximum") if k in prop]
    value = draw(st.sampled_from(low + high))
    if value in (prop.get("minimum"), prop.get("maximum")):  # a step of 0.0 left it inside
        value = value - 1 if value == prop.get("minimum") else value + 1
    return path, value, ("must be",)


@st.composite
def bad_choices(draw):
    path, prop = draw(st.sampled_from([(p, s) for p, s in FIELDS if "enum" in s]))
    word = draw(st.text("abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12))
    value = word if word not in prop["enum"] else word + "_x"
    return path, value, ("valid:",)


@st.composite
def unknown_keys(draw):
    section = draw(st.sampled_from(SECTIONS))
    prefix = f"{section}." if section else ""
    taken = {p.removeprefix(prefix) for p, _ in FIELDS if p.startswith(prefix) and "." not in p.removeprefix(prefix)}
    key = draw(st.from_regex(r"[a-z][a-z_]{0,15}", fullmatch=True).filter(lambda k: k not in taken))
    return (f"{section}.{key}" if section else key), 1, ("unknown field",)


@st.composite
def non_finite(draw):
    """NaN or infinity anywhere: a field sweep owns, a trainer's field, an axis value."""
    paths = [p for p, s in FIELDS if {"number", "integer"} & _kinds(s)]
    path = draw(st.sampled_from(paths + ["train.learning_rate", "lora.lora_dropout", "train.beta"]))
    return path, draw(st.sampled_from([float("nan"), float("inf"), float("-inf")])), ("finite",)


BROKEN = st.one_of(wrong_types(), out_of_range(), bad_choices(), unknown_keys(), non_finite())


def _with(path: str, value: Any) -> dict[str, Any]:
    """BASE with the field at the dotted `path` set to `value` (parents made as needed)."""
    raw = json.loads(json.dumps(BASE))
    *parents, last = path.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return raw


def test_the_base_spec_is_valid():
    assert parse_spec(BASE).num_trials() == 2


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(BROKEN)
def test_a_spec_breaking_any_schema_rule_names_the_field_in_one_line(broken):
    path, value, says = broken
    with pytest.raises(SpecError) as e:
        parse_spec(_with(path, value))
    assert e.value.field == path, (path, value, str(e.value))
    assert any(word in e.value.message for word in says) and "\n" not in str(e.value), str(e.value)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(BROKEN, st.sampled_from(["plan", "run"]))
def test_plan_and_run_refuse_a_broken_spec_with_exit_2_and_write_nothing(broken, command):
    path, value, _ = broken
    with tempfile.TemporaryDirectory() as tmp:
        raw = _with(path, value)
        if path != "results_dir":
            raw["results_dir"] = f"{tmp}/results"
        spec = Path(tmp, "spec.yaml")
        spec.write_text(yaml.safe_dump(raw))
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = cli.main([command, str(spec)])
        assert code == 2
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), err.getvalue()
        assert "Traceback" not in err.getvalue() + out.getvalue()
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["spec.yaml"]


def test_the_json_schema_takes_every_shipped_spec_and_flags_what_plan_refuses(tmp_path):
    """`sweep schema` is what an editor checks YAML with: the shipped specs pass; a misspelt
    trainer field, a word for a number and an unknown choice are flagged where they stand."""
    out = tmp_path / "sweep.schema.json"
    assert cli.main(["schema", "-o", str(out)]) == 0
    validator = jsonschema.Draft202012Validator(json.loads(out.read_text()))
    for path in sorted((REPO / "search_spaces").glob("*.yaml")):
        assert not list(validator.iter_errors(yaml.safe_load(path.read_text()))), path.name
    bad = {**BASE, "train": {"max_step": 5}, "axes": {"beta": ["high"]}, "search": {"method": "gird"}}
    flagged = {".".join(map(str, e.absolute_path)) for e in validator.iter_errors(bad)}
    assert flagged == {"train", "axes.beta", "search.method"}
    for field, value in [("train.max_step", 5), ("axes.beta", ["high"]), ("search.method", "gird")]:
        with pytest.raises(SpecError):
            parse_spec(_with(field, value))


def test_the_json_schema_completes_the_trainers_fields():
    schema = full_json_schema()
    train, lora, axes = (schema["properties"][s]["properties"] for s in ("train", "lora", "axes"))
    assert {"beta", "loss_type", "learning_rate", "max_steps", "simpo_gamma", "desirable_weight"} <= set(train)
    assert train["beta"] == {"type": "number"} and train["max_steps"] == {"type": "integer"}
    assert {"r", "lora_alpha", "target_modules"} <= set(lora)
    assert {"beta", "r", "bnb_4bit_quant_type"} <= set(axes)
