"""The spec's axes: sorted into grid, sampled and zipped axes, each value checked against its
field; `seeds` as a last grid axis; the rules every point must meet."""

from __future__ import annotations

import pytest

from sweep.errors import SpecError
from sweep.spec.axes import resolved_section, validate_point
from sweep.spec.load import parse_spec
from tests.conftest import small_spec


def _field_of(spec: dict) -> str:
    with pytest.raises(SpecError) as e:
        parse_spec(spec)
    return e.value.field


def test_axes_are_sorted_into_grid_sampled_and_zipped_with_values_coerced():
    spec = parse_spec(
        small_spec(
            "axes",
            axes={
                "beta": [0.1, "5e-1"],  # YAML 1.1 reads 5e-1 as a string: a float field coerces it
                "weight_decay": {"loguniform": [1e-4, 1e-1]},
                "r": {"randint": [4, 16]},
                "schedule": {"zip": {"warmup_steps": [1, 2], "lora_dropout": [0.0, 0.1]}},
            },
            search={"method": "random", "num_samples": 2},
        )
    )
    assert spec.axes == {"beta": [0.1, 0.5]}
    assert spec.sampled == {"weight_decay": {"loguniform": [1e-4, 1e-1]}, "r": {"randint": [4, 16]}}
    assert spec.zipped == {"schedule": {"warmup_steps": [1, 2], "lora_dropout": [0.0, 0.1]}}
    # every point of the grid, its zipped group unpacked into fields of their own sections
    assert len(spec.points()) == 2 * 2 and {"warmup_steps", "lora_dropout"} <= set(spec.points()[0])
    assert resolved_section(spec, "lora", spec.points()[-1])["lora_dropout"] == 0.1


def test_each_kind_of_bad_axis_names_its_field():
    assert (
        _field_of(small_spec("s", axes={"weight_decay": {"uniform": [0, 0.1]}})) == "axes.weight_decay"
    )  # grid search
    assert (
        _field_of(small_spec("z", axes={"g": {"zip": {"warmup_steps": [1, 2], "weight_decay": [0.0]}}})) == "axes.g.zip"
    )
    assert _field_of(small_spec("twice", axes={"max_steps": [4, 8]})) == "axes.max_steps"  # also set in train
    assert _field_of(small_spec("b", axes={"beta": [0.1, "lots"]})).startswith("axes.beta")
    assert _field_of(small_spec("u", axes={"beta": {"between": [0.1, 1]}})) == "axes.beta"
    assert _field_of(small_spec("n", axes={"no_such_field": [1, 2]})).startswith("axes.no_such_field")


def test_seeds_repeat_every_point_as_the_last_axis_and_clash_with_a_seed_set_elsewhere():
    spec = parse_spec(small_spec("seeds", seeds=[0, 1, 2]))
    assert list(spec.axes) == ["beta", "seed"] and spec.axes["seed"] == [0, 1, 2]
    assert len(spec.points()) == 2 * 3
    assert _field_of(small_spec("dup", seeds=[0, 0])) == "seeds"
    assert _field_of(small_spec("both", seeds=[0, 1], train={"seed": 3})) == "seeds"


def test_a_point_puts_its_values_on_top_of_the_sections_fixed_ones():
    spec = parse_spec(small_spec("sections", axes={"beta": [0.1], "r": [4, 8]}, lora={"lora_alpha": 32}))
    point = {"beta": 0.1, "r": 8}
    assert resolved_section(spec, "train", point)["beta"] == 0.1
    assert resolved_section(spec, "lora", point) == {"lora_alpha": 32, "r": 8}
    assert "mode" not in resolved_section(spec, "quantization", point)  # sweep's own key, not BitsAndBytesConfig's


def test_every_point_meets_its_loss_familys_rules():
    spec = parse_spec(small_spec("rules", axes={"loss_type": ["sigmoid", "kto"]}))
    validate_point(spec, {"loss_type": "sigmoid"})  # a DPO point with batch 8 is fine
    with pytest.raises(SpecError, match="KTO needs >= 2") as e:
        validate_point(spec, {"loss_type": "kto", "per_device_train_batch_size": 1})
    assert e.value.field == "train.per_device_train_batch_size"
    with pytest.raises(SpecError) as e:
        validate_point(spec, {"loss_type": "sigmoid", "max_steps": 0})
    assert e.value.field == "train.max_steps"
