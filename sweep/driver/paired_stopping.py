"""`scheduler: paired`: stop a trial whose judged answers are worse than the best trial's on the
same prompts, by a paired test rather than a threshold on a noisy mean (the use Optuna documents
for its WilcoxonPruner: the accuracy of LLM outputs on a set of questions).

At each evaluation a trial reports its per-prompt judged scores (`PER_PROMPT`). The best trial at
that evaluation is the one with the highest mean score there so far; a trial that is not it is
compared with it prompt by prompt with Wilcoxon's signed-rank test (scipy), one-sided: is this
trial's score lower? Below `level`, and past `grace_period` evaluations, it stops (KILLED, tagged
stopped early, as `asha` stops a trial). Like ASHA it is asynchronous: a trial is compared with the
best that has reached the same evaluation before it."""

from __future__ import annotations

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from ..trial.run import PER_PROMPT

ITERATION = "training_iteration"  # Ray Tune's count of a trial's reports: here, its evaluations


class PairedStopping(FIFOScheduler):
    def __init__(self, level: float, grace_period: int):
        super().__init__()
        self.level, self.grace_period = level, grace_period
        self.best: dict[int, tuple[float, list[float], str]] = {}  # evaluation -> (mean, scores, trial id)
        self.decisions: list[dict] = []  # each comparison made, for the trial's record and tests

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        scores, evaluation = result.get(PER_PROMPT), result.get(ITERATION)
        if not scores or evaluation is None:
            return TrialScheduler.CONTINUE
        mean = _mean(scores)
        best = self.best.get(evaluation)
        if best is None or mean > best[0] or best[2] == trial.trial_id:
            self.best[evaluation] = (mean, list(scores), trial.trial_id)
            return TrialScheduler.CONTINUE
        if evaluation < self.grace_period:
            return TrialScheduler.CONTINUE
        p = worse_p_value(scores, best[1])
        self.decisions.append({"trial": trial.trial_id, "evaluation": evaluation, "vs": best[2], "p": p})
        return TrialScheduler.STOP if p < self.level else TrialScheduler.CONTINUE


def worse_p_value(scores: list, best: list) -> float:
    """One-sided Wilcoxon signed-rank p-value that `scores` are lower than `best`, prompt by
    prompt (prompts either scored None left out; 1.0 where every pair is equal: nothing to test)."""
    from scipy.stats import wilcoxon

    pairs = [(a, b) for a, b in zip(scores, best) if a is not None and b is not None]
    if not pairs or all(a == b for a, b in pairs):
        return 1.0
    mine, theirs = zip(*pairs)
    return float(wilcoxon(mine, theirs, alternative="less", zero_method="zsplit").pvalue)


def _mean(values: list) -> float:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else float("-inf")
