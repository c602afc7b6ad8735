"""`scheduler: paired` on its own: a trial worse than the best on the same prompts stops, one that
is not goes on."""

from __future__ import annotations

import pytest


def test_paired_stopping_stops_a_trial_worse_on_the_same_prompts_and_keeps_one_that_is_not():
    """`scheduler: paired`'s decisions on known per-prompt scores (no sweep needed): the best
    trial at an evaluation is the one to beat; a trial lower on many prompts and higher on none
    stops once past its grace; one lower on a prompt and higher on another goes on."""
    from ray.tune.schedulers import TrialScheduler

    from sweep.driver.paired_stopping import ITERATION, PER_PROMPT, PairedStopping, worse_p_value

    class Trial:  # what the scheduler reads of Ray Tune's trial
        def __init__(self, trial_id):
            self.trial_id = trial_id

    good = [1.0] * 15 + [0.5] * 5
    bad = [0.0] * 10 + [1.0] * 5 + [0.5] * 5  # 10 prompts lower, none higher
    close = [0.5] + [1.0] * 14 + [0.5] * 4 + [1.0]  # one lower, one higher
    scheduler = PairedStopping(level=0.05, grace_period=2)

    def result(trial, scores, evaluation):
        return scheduler.on_trial_result(None, Trial(trial), {PER_PROMPT: scores, ITERATION: evaluation})

    assert result("good", good, 1) == TrialScheduler.CONTINUE  # the first to reach evaluation 1: the best
    assert result("bad", bad, 1) == TrialScheduler.CONTINUE  # worse, but within its grace period
    assert result("good", good, 2) == TrialScheduler.CONTINUE
    assert result("close", close, 2) == TrialScheduler.CONTINUE  # not worse at 5%
    assert result("bad", bad, 2) == TrialScheduler.STOP
    assert result("better", [1.0] * 20, 2) == TrialScheduler.CONTINUE and scheduler.best[2][2] == "better"
    # Every one of 10 prompts lower, by distinct amounts: exactly one of 2^10 sign patterns is as extreme.
    assert worse_p_value([0.0] * 10, [0.1 * i for i in range(1, 11)]) == pytest.approx(1 / 1024)
    assert worse_p_value(good, good) == 1.0  # nothing to test
