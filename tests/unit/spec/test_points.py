"""Points: their labels (MLflow run names), their stable ids, and a Ray Tune config read back as a point."""

from __future__ import annotations

from sweep.spec.load import parse_spec
from sweep.spec.points import describe_axis, point_id, point_label, point_of_config, short
from tests.conftest import small_spec


def test_a_points_id_is_stable_and_its_own():
    a = {"loss_type": "ipo", "beta": 0.1}
    assert point_id(a) == point_id(dict(reversed(list(a.items()))))  # the order of the keys does not matter
    assert point_id(a) != point_id({"loss_type": "ipo", "beta": 0.5})
    assert len(point_id(a)) == 10


def test_a_points_label_is_short_and_leaves_unset_values_out():
    assert (
        point_label({"loss_type": ["sigmoid", "sft"], "beta": 0.10, "seed": None}) == "loss_type=sigmoid+sft,beta=0.1"
    )
    assert short(1e-05) == "1e-05" and short(3) == "3"
    assert describe_axis({"loguniform": [1e-6, 1e-4]}) == "loguniform in [1e-06, 0.0001]"
    assert describe_axis({"choice": [16, 32]}) == "choice of 16, 32"


def test_a_tune_config_is_read_back_as_the_specs_point_in_axis_order():
    spec = parse_spec(
        small_spec("pts", axes={"beta": [0.1], "g": {"zip": {"warmup_steps": [1, 2], "weight_decay": [0.0, 0.1]}}})
    )
    config = {"g": {"weight_decay": 0.1, "warmup_steps": 2}, "beta": 0.1}  # as Tune hands it to a trial
    point = point_of_config(config, spec)
    assert point == {"beta": 0.1, "warmup_steps": 2, "weight_decay": 0.1}
    assert list(point) == spec.axis_names()
