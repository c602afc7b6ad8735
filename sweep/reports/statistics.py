"""Statistics over a sweep's trials: repeats over seeds (mean, std, Student-t interval), whether
the best point can be told from the runner-up (a paired t-test), and whether the proxy
(held-out reward accuracy) ranks trials as the judge does (Spearman). scipy computes them."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..spec.schema import DEFAULT_METRIC
from ..trial.harness import WORST
from ..trial.judge import LENGTH, SCORE

PROXY, JUDGED = DEFAULT_METRIC, SCORE  # the implicit-reward proxy and the judged generations


def finished(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The FINISHED trials that have `metric` (an empty frame if none has it)."""
    return df[(df["status"] == "FINISHED") & df[metric].notna()] if metric in df else df.iloc[0:0]


def objectives_for(df: pd.DataFrame, metric: str, mode: str) -> dict[str, str]:
    """The trade-off a report shows by default: the ranking metric its way, the judged answers'
    length, shorter better (preference tuning's known drift to longer answers), and the worst
    benchmark difference from the base model, higher better, where the trials have them.
    {column: "max" or "min"}."""
    chosen = {metric: mode}
    if LENGTH in df and LENGTH != metric and df[LENGTH].notna().any():
        chosen[LENGTH] = "min"
    if WORST in df and WORST != metric and df[WORST].notna().any():
        chosen[WORST] = "max"  # the benchmark task lost most on, against the base model
    return chosen


def pareto_front(df: pd.DataFrame, objectives: dict[str, str]) -> pd.DataFrame:
    """The finished trials that no other finished trial beats on every objective ({column: "max"
    or "min"}): none is at least as good on all of them and better on one. Rows in `df`'s order."""
    import numpy as np

    if not set(objectives) <= set(df.columns):
        return df.iloc[0:0]
    done = df[(df["status"] == "FINISHED") & df[list(objectives)].notna().all(axis=1)]
    signed = np.column_stack([done[c].to_numpy(float) * (1 if how == "max" else -1) for c, how in objectives.items()])
    beaten = [((signed >= row).all(axis=1) & (signed > row).any(axis=1)).any() for row in signed]
    return done[~np.array(beaten, dtype=bool)]


def repeats_frame(df: pd.DataFrame, axes: list[str], metric: str, mode: str) -> pd.DataFrame | None:
    """Repeats over `seed` grouped per point: n, mean, std and a 95% confidence interval
    (Student's t) of `metric`, best mean first. None when the sweep has no seed axis."""
    if "seed" not in df or metric not in df:
        return None
    done = _repeats(df, axes, metric)
    if done is None:
        return None
    from scipy import stats  # heavy: only where there are repeats

    g = done.groupby("point", sort=False)[metric]
    out = pd.DataFrame({"n": g.count(), "mean": g.mean(), "std": g.std()})
    half = [stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else math.nan for n, sd in zip(out["n"], out["std"])]
    out["ci95_low"], out["ci95_high"] = out["mean"] - half, out["mean"] + half
    out = out.sort_values("mean", ascending=(mode == "min"), kind="stable")
    return out.reset_index()


def separability(df: pd.DataFrame, repeats: pd.DataFrame, axes: list[str], metric: str, mode: str) -> str:
    """In plain words: can the best point be told apart from the runner-up?

    Decided by a paired t-test over the seeds both ran (same seed = same data order and LoRA
    init, so pairing removes that noise), p < 0.05; with fewer than two common seeds, by
    whether the 95% intervals overlap."""
    if repeats is None or len(repeats) < 2:
        return ""
    from scipy import stats

    best, second = repeats.iloc[0], repeats.iloc[1]

    def desc(r):
        ci = f" ± {(r['ci95_high'] - r['mean']):.3g}" if r["n"] > 1 else ""
        return f"{r['point']} ({r['mean']:.4g}{ci}, n={r['n']})"

    head = f"best {desc(best)} vs runner-up {desc(second)} on {metric}: "
    if best["n"] < 2 or second["n"] < 2:
        return head + "one run each, so nothing can be said about separability; add seeds"
    by_point = {name: rows.set_index("seed")[metric] for name, rows in _repeats(df, axes, metric).groupby("point")}
    a, b = by_point[best["point"]], by_point[second["point"]]
    common = sorted(set(a.index) & set(b.index))
    overlap = best["ci95_low"] <= second["ci95_high"] and second["ci95_low"] <= best["ci95_high"]
    intervals = "the 95% intervals overlap" if overlap else "the 95% intervals do not overlap"
    if len(common) >= 2 and not (a[common] == b[common]).all():
        p = float(stats.ttest_rel(a[common], b[common]).pvalue)
        test = f"paired t-test over {len(common)} seeds p={p:.3g}"
        separable = p < 0.05
    else:
        test, separable = "no paired test (fewer than two common seeds or identical values)", not overlap
    if separable:
        return head + f"separable ({test}; {intervals})."
    return head + (
        f"NOT separable ({test}; {intervals}): the difference may be seed noise; treat them as tied, or add seeds."
    )


def _repeats(df: pd.DataFrame, axes: list[str], metric: str) -> pd.DataFrame | None:
    """Finished trials with `metric`, each with `point`: its label without the seed (None if none)."""
    keys = [a for a in axes if a != "seed" and a in df]
    done = finished(df, metric)
    if done.empty or not keys:
        return None
    return done.assign(point=[_point_name(row, keys) for _, row in done.iterrows()])


def _point_name(row, keys: list[str]) -> str:
    return ",".join(
        f"{k}={row[k]:g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in keys if not _isnull(row[k])
    )


def _isnull(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def proxy_vs_judge(df: pd.DataFrame) -> dict[str, Any] | None:
    """Does held-out reward accuracy (the proxy) rank the finished trials as the judged
    generations do? Spearman's rank correlation and each one's winner; None without both
    metrics on at least three finished trials."""
    done = finished(finished(df, PROXY), JUDGED)
    if len(done) < 3:
        return None
    from scipy.stats import spearmanr

    rho = spearmanr(done[PROXY], done[JUDGED]).statistic
    return {
        "trials": len(done),
        "spearman": None if math.isnan(rho) else float(rho),
        "proxy_best": done.loc[done[PROXY].idxmax(), "trial"],
        "judge_best": done.loc[done[JUDGED].idxmax(), "trial"],
    }


def describe_agreement(a: dict[str, Any]) -> str:
    rho = "undefined (one of them is constant)" if a["spearman"] is None else f"{a['spearman']:.2f}"
    line = (
        f"proxy vs judge over {a['trials']} finished trials: Spearman rank correlation of {PROXY} and {JUDGED} = {rho}"
    )
    if a["proxy_best"] == a["judge_best"]:
        return f"{line}; both pick {a['judge_best']}"
    return f"{line}\nthey pick different winners: {PROXY} picks {a['proxy_best']}, {JUDGED} picks {a['judge_best']}"
