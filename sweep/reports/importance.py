"""Which swept axis mattered: Optuna's importance evaluator over a sweep's finished trials.

The trials are handed to an Optuna study as finished trials (`optuna.trial.create_trial`), so
Optuna's fANOVA computes the importances, whatever searched the space; no statistics here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

MIN_TRIALS = 4  # below this a random forest over the axes says nothing worth printing
# Optuna's trees grow 64 levels deep by default: over a large sweep they fit seed noise, slowly;
# 8 levels split a handful of axes finely enough (docs/benchmarks.md, reading a large sweep).
MAX_DEPTH = 8
# The forest's cost grows with trials x trees; past 200 trials fewer trees (down to 16), each
# fitted on more trials, give the same shares in a fraction of the time.
TREES_X_TRIALS = 64 * 200


def n_trees(n_trials: int) -> int:
    return max(16, min(64, TREES_X_TRIALS // max(n_trials, 1)))


@dataclass
class Importance:
    table: pd.DataFrame
    """One row per varied axis, most important first: axis, importance (shares summing to 1),
    best (the value with the best mean metric), its mean, and how many values were tried."""
    note: str
    """One line: what the numbers rest on, or why there are none."""


def axis_importance(df: pd.DataFrame, axes: list[str], metric: str, mode: str = "max") -> Importance:
    """fANOVA importance of each axis that took more than one value, for `metric` over the
    finished trials of the trials frame `df`."""
    import optuna

    empty = pd.DataFrame(columns=["axis", "importance", "best", "best_mean", "values"])
    done = df[(df["status"] == "FINISHED") & df[metric].notna()] if metric in df else df.iloc[0:0]
    varied = [a for a in axes if a in done and done[a].astype(str).nunique() > 1]
    if not varied:
        return Importance(empty, f"no swept axis took two values over the finished trials with {metric}")
    if len(done) < MIN_TRIALS:
        return Importance(empty, f"too few finished trials ({len(done)}) with {metric} to say which axis mattered")
    if done[metric].astype(float).nunique() == 1:  # fANOVA has no variance to share out (it raises)
        value = float(done[metric].iloc[0])
        return Importance(empty, f"every finished trial has {metric} = {value:.4g}: no axis made a difference")
    distributions = {a: _distribution(done[a]) for a in varied}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for _, row in done.iterrows():
        params = {a: _param(row[a], distributions[a]) for a in varied}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=float(row[metric])))
    from optuna.distributions import FloatDistribution, IntDistribution

    try:
        shares = optuna.importance.get_param_importances(
            study,
            evaluator=optuna.importance.FanovaImportanceEvaluator(
                n_trees=n_trees(len(done)), max_depth=MAX_DEPTH, seed=0
            ),
        )
    except RuntimeError:  # "zero total variance in all trees": no split of the axes changes the metric
        return Importance(empty, f"{metric} varies too little over the finished trials: the axes cannot be told apart")
    rows = []
    for axis, share in shares.items():
        key = (
            done[axis]
            if isinstance(distributions[axis], (IntDistribution, FloatDistribution))
            else done[axis].astype(str)
        )
        means = done.groupby(key, sort=False)[metric].mean()
        pick = means.idxmax() if mode == "max" else means.idxmin()
        rows.append({"axis": axis, "importance": share, "best": pick, "best_mean": means[pick], "values": len(means)})
    table = pd.DataFrame(rows, columns=empty.columns)
    note = f"fANOVA (Optuna) over {len(done)} finished trials: the share of {metric}'s variance each axis explains"
    if len(done) < 10 * len(varied):
        note += f"; with {len(done)} trials for {len(varied)} axes, read it as a hint"
    return Importance(table, note)


def _distribution(values: pd.Series):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kinds = {type(v) for v in values}
    if kinds <= {int} and values.nunique() > 1:
        return IntDistribution(int(values.min()), int(values.max()))
    if kinds <= {int, float} and all(math.isfinite(v) for v in values):
        lo, hi = float(values.min()), float(values.max())
        return FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= 20)
    return CategoricalDistribution(sorted({str(v) for v in values}))


def _param(value, distribution):
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return str(value)
    return int(value) if isinstance(distribution, IntDistribution) else float(value)


def describe(importance: Importance) -> str:
    """The importances as a few terminal lines (a bar per axis)."""
    if importance.table.empty:
        return f"what mattered: {importance.note}"
    lines = [f"what mattered: {importance.note}"]
    width = max(len(a) for a in importance.table["axis"])
    for _, row in importance.table.iterrows():
        bar = "#" * max(1, round(row["importance"] * 30)) if row["importance"] > 0 else ""
        value = f"{row['best']:g}" if isinstance(row["best"], float) else row["best"]
        best = f"best {value} (mean {row['best_mean']:.4g} over its trials)"
        lines.append(f"  {row['axis']:<{width}}  {row['importance']:6.1%}  {bar:<30}  {best}")
    return "\n".join(lines)
