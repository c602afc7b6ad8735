"""The judge's scorers on known answers: grades, weighted totals, win rates, their metric names."""

from __future__ import annotations

import pytest

from sweep.spec.load import parse_spec
from sweep.trial import answers, judge, scorers
from tests.conftest import small_spec


def test_verifiable_grades_concise_hedging_and_wrong_answers():
    completions = ["cat", "cat, I think, but I am not sure.", "dog", "concatenate", "", "43."]
    answers = ["cat", "cat", "cat", "cat", "cat", "43"]
    assert scorers.verifiable(prompts=[""] * 6, completions=completions, answer=answers) == [
        1.0,
        0.5,
        0.0,
        0.0,
        0.0,
        1.0,
    ]
    # without an `answer` column the chosen answer is the reference; messages are read as text
    chosen = [[{"role": "assistant", "content": "fox"}]]
    assert scorers.verifiable(prompts=[[]], completions=[[{"role": "assistant", "content": "fox"}]], chosen=chosen) == [
        1.0
    ]


def test_totals_are_weighted_sums_and_win_rate_counts_ties_half():
    weighted = [scorers.Scorer("builtin", "verifiable", "verifiable", 1.0), scorers.Scorer("function", "m:f", "f", 0.5)]
    scores = {"verifiable": [1.0, 0.5, None, 0.0], "f": [0.2, None, None, 1.0]}
    assert answers.totals(weighted, scores, 4) == [1.1, 0.5, None, 0.5]
    # win, tie, not comparable, loss
    assert answers.outcomes([1.1, 0.5, None, 0.5], [1.0, 0.5, 0.3, 0.9]) == [1.0, 0.5, None, 0.0]
    judged = answers.Judged(["a", "b", "c", "d"], [1, 2, 3, 4], scores, [1.1, 0.5, None, 0.5])
    metrics = judged.metrics(judge.PREFIX)
    assert metrics["eval_judge/verifiable"] == pytest.approx(0.5) and metrics["eval_judge/f"] == pytest.approx(0.6)
    assert metrics["eval_judge/score"] == pytest.approx(0.7) and metrics["eval_judge/length"] == 2.5


def test_scorer_forms_and_their_metric_names(tmp_path):
    assert scorers.parse_scorer("s", "builtin:verifiable") == scorers.Scorer("builtin", "verifiable", "verifiable")
    assert scorers.parse_scorer("s", "my_scorers:brevity") == scorers.Scorer(
        "function", "my_scorers:brevity", "brevity"
    )
    assert scorers.parse_scorer("s", {"reward_model": "org/rm-7b", "weight": 2}) == scorers.Scorer(
        "reward_model", "org/rm-7b", "rm-7b", 2.0
    )
    assert scorers.parse_scorer("s", {"builtin": "verifiable", "name": "exact"}).name == "exact"
    # a function without **kwargs gets only the arguments it names
    scorers.BUILTIN_SCORERS["_only_named"] = lambda completions, task: [float(t == "animal") for t in task]
    try:
        given = scorers.call_scorer(
            scorers.Scorer("builtin", "_only_named", "x"), [[]], ["cat"], {"task": ["animal"], "flaw": ["x"]}, []
        )
    finally:
        del scorers.BUILTIN_SCORERS["_only_named"]
    assert given == [1.0]  # neither `prompts` nor the `flaw` column it does not name reached it
    spec = parse_spec(
        small_spec("judged", judge={"prompts": 8, "scorers": ["builtin:verifiable"]}, metric="eval_judge/win_rate")
    )
    assert spec.judge.scorers == [scorers.Scorer("builtin", "verifiable", "verifiable")]
