"""The statistics of a finished sweep on known tables: repeats over seeds, the Pareto front."""

from __future__ import annotations

import pandas as pd
import pytest


def test_repeat_statistics_match_hand_computed_values():
    """Sample std, a Student-t 95% interval (not a normal one) and the paired t-test verdict
    at p < 0.05, on known numbers (no sweep needed)."""
    from sweep.reports.statistics import repeats_frame, separability

    def trials(values: dict[float, list[float]]) -> pd.DataFrame:
        rows = [
            {"trial": f"beta={b:g},seed={s}", "status": "FINISHED", "beta": b, "seed": s, "m": v}
            for b, vs in values.items()
            for s, v in enumerate(vs)
        ]
        return pd.DataFrame(rows)

    df = trials({0.5: [0.80, 0.82, 0.84], 0.1: [0.70, 0.75, 0.71]})
    rep = repeats_frame(df, ["beta", "seed"], "m", "max").set_index("point")
    assert rep.loc["beta=0.5", "std"] == pytest.approx(0.02)
    # t(0.975, df=2) = 4.302653: half-width 4.302653 * 0.02 / sqrt(3) = 0.049683 (a normal interval: 0.022632)
    assert (rep.loc["beta=0.5", "ci95_low"], rep.loc["beta=0.5", "ci95_high"]) == pytest.approx(
        (0.770317, 0.869683), abs=1e-6
    )
    # paired differences 0.10, 0.07, 0.13: t = 5.7735, df = 2, two-sided p = 0.0287
    verdict = separability(df, repeats_frame(df, ["beta", "seed"], "m", "max"), ["beta", "seed"], "m", "max")
    assert "separable (paired t-test over 3 seeds p=0.0287" in verdict and "NOT" not in verdict
    # differences 0.01, -0.02, 0.04: t = 0.577, p = 0.622: not separable
    close = trials({0.5: [0.80, 0.82, 0.84], 0.1: [0.79, 0.84, 0.80]})
    verdict = separability(close, repeats_frame(close, ["beta", "seed"], "m", "max"), ["beta", "seed"], "m", "max")
    assert "NOT separable (paired t-test over 3 seeds p=0.622" in verdict


def test_the_pareto_front_on_a_known_table():
    """The trials no other finished trial beats on every objective, each objective its way; a
    tie is beaten by no one; failed trials and missing values are never on it (no sweep needed)."""
    from sweep.reports.statistics import objectives_for, pareto_front

    df = pd.DataFrame(
        [  # (trial, status, score up, length down, kept up)
            ("a", "FINISHED", 0.90, 9.0, 0.5),  # the best score: on the front
            ("b", "FINISHED", 0.80, 3.0, 0.5),  # shorter than a, lower score: on it
            ("c", "FINISHED", 0.80, 4.0, 0.5),  # beaten by b (same score, longer)
            ("d", "FINISHED", 0.70, 3.0, 0.5),  # beaten by b (same length, lower score)
            ("e", "FINISHED", 0.80, 3.0, 0.5),  # b's twin: neither beats the other
            ("f", "FAILED", 0.99, 1.0, 0.9),  # would beat all, but did not finish
            ("g", "FINISHED", 0.95, None, 0.9),  # no length: not comparable
            ("h", "FINISHED", 0.60, 2.0, 0.1),  # the shortest: on it
        ],
        columns=["trial", "status", "score", "length", "kept"],
    )
    two = {"score": "max", "length": "min"}
    assert list(pareto_front(df, two)["trial"]) == ["a", "b", "e", "h"]
    # A third objective on which c beats b: c joins the front; d is still beaten by b.
    assert list(
        pareto_front(df.assign(kept=[0.5, 0.5, 0.6, 0.5, 0.5, 0.9, 0.9, 0.1]), two | {"kept": "max"})["trial"]
    ) == ["a", "b", "c", "e", "h"]
    assert pareto_front(df, {"score": "max", "nope": "min"}).empty
    assert objectives_for(df, "score", "max") == {"score": "max"}  # no judged length: one objective
    judged = df.rename(columns={"length": "eval_judge/length"})
    assert objectives_for(judged, "score", "max") == {"score": "max", "eval_judge/length": "min"}


def test_the_default_objectives_and_whether_the_proxy_ranks_as_the_judge_does():
    import pandas as pd

    from sweep.reports.statistics import JUDGED, PROXY, finished, objectives_for, proxy_vs_judge
    from sweep.trial.judge import LENGTH

    df = pd.DataFrame(
        {
            "trial": ["a", "b", "c", "d"],
            "status": ["FINISHED", "FINISHED", "FINISHED", "FAILED"],
            PROXY: [0.9, 0.7, 0.5, 1.0],  # the proxy's order is the judge's reversed
            JUDGED: [0.2, 0.5, 0.8, None],
            LENGTH: [30.0, 20.0, 10.0, None],
        }
    )
    assert list(finished(df, JUDGED)["trial"]) == ["a", "b", "c"]  # not the failed one
    assert objectives_for(df, JUDGED, "max") == {JUDGED: "max", LENGTH: "min"}
    assert objectives_for(df.drop(columns=[LENGTH]), JUDGED, "max") == {JUDGED: "max"}
    agreement = proxy_vs_judge(df)
    assert agreement == {"trials": 3, "spearman": -1.0, "proxy_best": "a", "judge_best": "c"}
    assert proxy_vs_judge(df.head(2)) is None  # too few to rank
