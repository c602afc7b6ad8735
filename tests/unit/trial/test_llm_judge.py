"""The LLM judge's strict verdicts, both-order outcomes, templates and the length-controlled
win rate, on known inputs (its real generations are in tests/integration/test_judge.py)."""

from __future__ import annotations

import math

import pytest

from sweep.trial import llm_judge
from sweep.trial.scorers import ScorerError, parse_scorer


def test_verdicts_are_parsed_strictly_never_guessed():
    parse = llm_judge.parse_verdict
    assert parse("pairwise", "B is more precise. [[B]]") == "B"
    assert parse("pairwise", "[[A]] ... so again [[A]]") == "A"  # the same verdict twice is one verdict
    assert parse("pairwise", "[[A]] or maybe [[B]]") is None  # two verdicts: none
    assert parse("pairwise", "A is better.") is None  # not the format
    assert parse("pairwise", "[[D]]") is None
    assert parse("grade", "Rating: [[7]]") == 7.0 and parse("grade", "[[9.5]]") == 9.5
    assert parse("grade", "[[11]]") is None and parse("grade", "[[0]]") is None  # off the 1-10 scale
    assert parse("grade", "Rating: 7") is None


def test_both_orders_decide_and_disagreeing_orders_are_a_tie():
    outcome = llm_judge.pairwise_outcome  # (verdict with the trial as A, verdict with the trial as B)
    assert outcome("A", "B") == 1.0  # the trial's answer won in both positions
    assert outcome("B", "A") == 0.0
    assert outcome("A", "A") == 0.5  # the judge preferred whatever came first: position bias, a tie
    assert outcome("C", "C") == 0.5 and outcome("A", "C") == 0.5
    assert outcome("A", None) is None and outcome(None, "B") is None  # unparseable: no outcome


def test_length_controlled_win_rate_on_a_known_table():
    # Five prompts where the trial's answer is 10 tokens longer (4 wins, 1 loss) and five where
    # it is 10 shorter (2 wins, 3 losses): 60% raw. The regression on x = tanh(diff / sd) fits
    # both groups exactly, so at x = 0 the log-odds are the mean of the groups' log-odds.
    outcomes = [1, 1, 1, 1, 0] + [1, 1, 0, 0, 0]
    lengths = [20] * 5 + [5] * 5
    base = [10] * 5 + [15] * 5
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    hand = 1 / (1 + math.exp(-(logit(0.8) + logit(0.4)) / 2))
    lc = llm_judge.length_controlled_win_rate(outcomes, lengths, base)
    assert lc == pytest.approx(hand, abs=1e-3) and lc == pytest.approx(0.6202, abs=1e-3)
    # ties count half; no length difference or no variation: the plain win rate
    assert llm_judge.length_controlled_win_rate([1, 0.5, None], [3, 3, 3], [3, 3, 3]) == 0.75
    assert llm_judge.length_controlled_win_rate([1, 1], [9, 3], [3, 3]) == 1.0
    assert llm_judge.length_controlled_win_rate([None], [1], [2]) is None
    # length alone separates wins from losses: finite, and near the middle
    separated = llm_judge.length_controlled_win_rate([1, 1, 0, 0], [9, 9, 1, 1], [5, 5, 5, 5])
    assert 0.4 < separated < 0.6


def test_templates_need_their_slots_and_keep_other_braces(tmp_path):
    ok = tmp_path / "ok.txt"
    ok.write_text('Q: {question}\nA: {answer_a}\nB: {answer_b}\nJSON like {"verdict": "[[A]]"}')
    text = llm_judge.read_template(str(ok), "pairwise", "some/judge")
    assert llm_judge.render(text, question="q", answer_a="x", answer_b="y") == (
        'Q: q\nA: x\nB: y\nJSON like {"verdict": "[[A]]"}'
    )
    (tmp_path / "one.txt").write_text("Q: {question} A: {answer_a}")
    with pytest.raises(llm_judge.TemplateError, match=r"lacks the slot\(s\) \{answer_b\}"):
        llm_judge.read_template(str(tmp_path / "one.txt"), "pairwise", "some/judge")
    with pytest.raises(llm_judge.TemplateError, match="cannot read template"):
        llm_judge.read_template(str(tmp_path / "none.txt"), "grade", "some/judge")
    # defaults: MT-Bench's prompts for a judge model, the compact one for builtin:judge
    assert "impartial judge" in llm_judge.read_template(None, "pairwise", "org/judge-7b")
    assert llm_judge.read_template(None, "grade", "builtin:judge").startswith("Grade.")


def test_llm_scorer_forms():
    short = parse_scorer("s", "llm:builtin:judge")
    assert (short.kind, short.source, short.name, short.mode, short.max_new_tokens) == (
        "llm",
        "builtin:judge",
        "llm_judge",
        "pairwise",
        32,
    )
    full = parse_scorer("s", {"llm": "/models/judge-7b", "mode": "grade", "device": "cuda:1", "weight": 0.5})
    assert (full.name, full.mode, full.device, full.weight, full.max_new_tokens) == (
        "llm_judge-7b",
        "grade",
        "cuda:1",
        0.5,
        512,
    )
    for raw, where, message in [
        ({"llm": "builtin:judge", "mode": "rank"}, "s.mode", "must be one of pairwise, grade"),
        ({"llm": "builtin:judge", "max_new_tokens": 0}, "s.max_new_tokens", "whole number >= 1"),
        ({"llm": "builtin:judge", "template": ""}, "s.template", "non-empty string"),
        ({"reward_model": "x/y", "mode": "grade"}, "s", "an llm judge also"),  # llm options on another kind
        ("llm:", "s", "llm:<model>"),
    ]:
        with pytest.raises(ScorerError, match=message) as e:
            parse_scorer("s", raw)
        assert e.value.where == where, raw


def test_an_llm_judges_metrics_rank_a_sweep_and_its_names_do_not_clash():
    from sweep.errors import SpecError
    from sweep.spec.load import parse_spec
    from tests.conftest import small_spec

    judge = {"prompts": 8, "scorers": ["builtin:verifiable", "llm:builtin:judge"]}
    for metric in ("eval_judge/llm_judge", "eval_judge/llm_judge_lc", "eval_judge/llm_judge_unparsed"):
        assert parse_spec(small_spec("j", judge=judge, metric=metric)).metric == metric
    graded = {"prompts": 8, "scorers": [{"llm": "builtin:judge", "mode": "grade"}]}
    with pytest.raises(SpecError, match="not produced by this sweep's judge"):  # a grade has no win rate to control
        parse_spec(small_spec("j", judge=graded, metric="eval_judge/llm_judge_lc"))
    clashing = {"prompts": 8, "scorers": ["llm:builtin:judge", {"builtin": "verifiable", "name": "llm_judge_lc"}]}
    with pytest.raises(SpecError, match="named 'llm_judge_lc'"):
        parse_spec(small_spec("j", judge=clashing))
