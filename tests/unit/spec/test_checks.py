"""Checks past the schema: a trainer config field's value, the model, the dataset's path."""

from __future__ import annotations

import pytest

from sweep.errors import SpecError
from sweep.spec.checks import check_field, section_of, unusable_inputs, validate_model
from sweep.spec.load import parse_spec
from tests.conftest import small_spec


def test_a_field_is_routed_to_the_config_that_has_it():
    assert section_of("beta") == "train" and section_of("learning_rate") == "train"
    assert section_of("lora_alpha") == "lora" and section_of("target_modules") == "lora"
    assert section_of("bnb_4bit_quant_type") == "quantization"
    assert section_of("no_such_field") is None


def test_a_fields_value_is_checked_against_its_type_and_range():
    assert check_field("train.learning_rate", "train", "learning_rate", "5e-4") == 5e-4  # YAML 1.1's string
    assert check_field("train.logging_steps", "train", "logging_steps", 5) == 5
    with pytest.raises(SpecError, match="must be > 0") as e:
        check_field("axes.beta", "train", "beta", 0.0)
    assert e.value.field == "axes.beta"
    with pytest.raises(SpecError, match="expected"):
        check_field("train.max_length", "train", "max_length", "long")
    with pytest.raises(SpecError, match="cannot be combined"):
        check_field("train.loss_type", "train", "loss_type", ["sigmoid", "kto"])
    with pytest.raises(SpecError, match="did you mean 'sigmoid'"):
        check_field("train.loss_type", "train", "loss_type", "sigmod")


def test_an_unknown_builtin_model_names_the_ones_there_are():
    validate_model("builtin:tiny")
    with pytest.raises(SpecError, match="builtin:tiny") as e:
        validate_model("builtin:huge")
    assert e.value.field == "model"


def test_a_data_path_this_machine_cannot_use_is_named_before_anything_runs(tmp_path):
    spec = parse_spec(small_spec("data", dataset={"path": str(tmp_path / "missing.jsonl")}))
    assert [field for field, _ in unusable_inputs(spec)] == ["dataset.path"]
    assert unusable_inputs(parse_spec(small_spec("ok"))) == []


def test_bad_harness_entries_name_the_field(tmp_path, monkeypatch):
    import importlib.util

    def refused(harness: dict) -> SpecError:
        with pytest.raises(SpecError) as e:
            parse_spec(small_spec("h", harness=harness), source=str(tmp_path / "h.yaml"))
        return e.value

    e = refused({"tasks": [{"task": "builtin:prefs_choise"}]})
    assert e.field == "harness.tasks[0].task" and "did you mean 'builtin:prefs_choice'" in str(e)
    e = refused({"tasks": [{"task": "arc_easy", "include": "no_such_folder"}]})
    assert e.field == "harness.tasks[0].include" and "is not a folder" in str(e)
    (tmp_path / "tasks").mkdir()  # an include folder is found beside the spec
    spec = parse_spec(
        small_spec("h", harness={"tasks": [{"task": "t", "include": "tasks"}]}), source=str(tmp_path / "h.yaml")
    )
    assert spec.harness.tasks[0].include == str((tmp_path / "tasks").resolve())
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "lm_eval" else real_find_spec(n, *a))
    e = refused({"tasks": [{"task": "builtin:prefs_choice"}]})
    assert e.field == "harness.tasks" and "pip install -e '.[harness]'" in str(e)
    monkeypatch.undo()
