"""The Ray Tune driver's pieces that need no Ray running: the spec's axes as Tune's search space,
and the scheduler each `scheduler.type` names."""

from __future__ import annotations

from ray import tune
from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

from sweep.compat.halving import SuccessiveHalving
from sweep.driver.orchestrate import _scheduler, param_space
from sweep.driver.paired_stopping import PairedStopping
from sweep.spec.load import parse_spec
from sweep.trial.run import FINAL
from tests.conftest import small_spec


def test_the_axes_become_tunes_search_space():
    spec = parse_spec(
        small_spec(
            "space",
            axes={
                "beta": [0.1, 0.5],
                "r": {"randint": [4, 16]},
                "g": {"zip": {"warmup_steps": [1, 2], "weight_decay": [0.0, 0.1]}},
            },
            search={"method": "random", "num_samples": 2},
        )
    )
    space = param_space(spec)
    assert space["beta"] == tune.grid_search([0.1, 0.5])
    assert space["g"] == tune.grid_search(
        [{"warmup_steps": 1, "weight_decay": 0.0}, {"warmup_steps": 2, "weight_decay": 0.1}]
    )
    # both ends of a randint axis are in it: Ray's upper bound is exclusive
    assert (space["r"].lower, space["r"].upper) == (4, 17)
    optuna = param_space(parse_spec(small_spec("o", search={"method": "optuna", "num_samples": 2})))
    assert optuna["beta"].categories == [0.1, 0.5]  # Optuna takes no grid: a list is a choice


def test_each_scheduler_type_is_its_tune_scheduler():
    def scheduler(**s):
        judge = {"prompts": 4, "scorers": ["builtin:verifiable"], "when": "eval"}  # paired compares judged answers
        return _scheduler(parse_spec(small_spec("sched", scheduler=s, judge=judge)))

    assert scheduler() is None
    asha = scheduler(type="asha", grace_period=2, reduction_factor=3)
    assert isinstance(asha, ASHAScheduler) and asha._reduction_factor == 3
    assert isinstance(scheduler(type="median"), MedianStoppingRule)
    paired = scheduler(type="paired", level=0.1, grace_period=2)
    assert isinstance(paired, PairedStopping) and (paired.level, paired.grace_period) == (0.1, 2)
    halving = scheduler(type="halving", grace_period=1, reduction_factor=2)
    assert isinstance(halving, SuccessiveHalving) and halving.n_trials == 2 and halving.final_key == FINAL
