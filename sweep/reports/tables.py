"""Tables that answer "which loss, which beta?", read from MLflow (the source of truth).

Everything here starts from the tracking store, so it works against any MLflow server and
for sweeps run elsewhere; pandas builds the tables. The terminal (`report`), the CSV
(`export`) and the plots (`plots.py`) all come from `trials_frame`, so they agree.

Raw losses and margins are not comparable across loss types and betas (IPO's losses are
~25 where sigmoid's are ~0.69; margins scale with beta), so the default ranking metric is
held-out preference accuracy, and tables show margin / beta beside the margin.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..compat.mlflow_internals import metric_histories
from ..errors import SpecError, unknown
from ..record import tracking
from ..record.store import Sweep, SweepNotFound, find_run
from ..trial import harness
from ..trial.judge import BASE_PREFIX, LENGTH, SCORE, WIN_RATE
from .importance import axis_importance, describe
from .statistics import (
    describe_agreement,
    finished,
    objectives_for,
    pareto_front,
    proxy_vs_judge,
    repeats_frame,
    separability,
)

# Final metrics shown on the terminal (export has every metric).
SUMMARY_METRICS = [
    SCORE,
    WIN_RATE,
    LENGTH,
    harness.WORST,
    harness.REGRESSED,
    "eval_rewards/accuracies",
    "eval_rewards/margins",
    "eval_margin/beta",
    "eval_loss",
    "rewards/accuracies",
    "rewards/margins",
    "loss",
]
# Metrics whose best value over a trial's history is also reported ("best_<metric>").
BEST_OF = {SCORE: "max", "eval_rewards/accuracies": "max", "eval_rewards/margins": "max", "eval_loss": "min"}
ID_COLUMNS = ["trial", "trial_id", "run_id", "status"]
# per-step curves plotted per trial (those a sweep has)
CURVES = ("rewards/margins", "rewards/accuracies", "eval_rewards/accuracies", SCORE)


def trials_frame(sweep: Sweep, *, all_metrics: bool = False, best: bool = True) -> pd.DataFrame:
    """One row per trial: ids, status, swept values, final metrics (and best-over-history).

    Column order is stable: ids and status, the swept values in the spec's axis order, the
    metrics (SUMMARY_METRICS first, then the rest alphabetically), steps, runtime, error.
    Rows are ranked by the sweep's metric, best first; trials without it (failed, killed)
    come last and are kept, never dropped.
    """
    c = tracking.client(sweep.uri)
    read_tags = (tracking.TAG_STOPPED_EARLY, tracking.TAG_ERROR)
    params_read = (tracking.SWEPT_PREFIX, tracking.POINT, tracking.BETA, "train.beta")
    runs = sweep.runs_with(metrics=None, tags=read_tags, params=params_read)
    logged = {key for run in runs for key in run.data.metrics}
    histories = metric_histories(c, [r.info.run_id for r in runs], [k for k in BEST_OF if k in logged]) if best else {}
    rows = []
    for run in runs:
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        row: dict[str, Any] = {
            "trial": run.info.run_name,
            "trial_id": tags.get(tracking.TAG_TRIAL_ID),
            "run_id": run.info.run_id,
            "status": "STOPPED_EARLY" if tags.get(tracking.TAG_STOPPED_EARLY) else run.info.status,
        }
        row.update(tracking.swept_values(params))
        # A swept value wins over a metric of the same name: Trainer logs the *scheduled*
        # `learning_rate` at every step, which would otherwise replace the swept one.
        row.update({k: v for k, v in metrics.items() if k not in row})
        beta = row.get("beta", float(params.get(tracking.BETA, params.get("train.beta", "nan"))))
        if isinstance(beta, (int, float)) and beta > 0 and "eval_rewards/margins" in metrics:
            row["eval_margin/beta"] = metrics["eval_rewards/margins"] / beta
        for key, how in BEST_OF.items():
            history = [m.value for m in histories.get((run.info.run_id, key), ())]
            if history:
                row[f"best_{key}"] = max(history) if how == "max" else min(history)
        row["steps"] = metrics.get("global_step", math.nan)
        row["runtime_s"] = metrics.get("train_runtime", math.nan)
        row["error"] = (tags.get(tracking.TAG_ERROR) or "").strip().split("\n")[0]
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=ID_COLUMNS)
    df = pd.DataFrame(rows)
    swept = [a for a in sweep.axes if a in df] + sorted(
        c for c in df if c not in sweep.axes and c not in ID_COLUMNS and _is_swept(c, runs)
    )
    metric_cols = [m for m in SUMMARY_METRICS if m in df]
    metric_cols += [f"best_{k}" for k in BEST_OF if f"best_{k}" in df]
    if all_metrics:
        rest = {"steps", "runtime_s", "error", "global_step", "train_runtime"}
        metric_cols += sorted(c for c in df if c not in ID_COLUMNS + swept + metric_cols and c not in rest)
    df = df[ID_COLUMNS + swept + metric_cols + ["steps", "runtime_s", "error"]]
    return rank(df, sweep.metric, sweep.mode)


def rank(df: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    if metric not in df:
        return df.reset_index(drop=True)
    return df.sort_values(metric, ascending=(mode == "min"), na_position="last", kind="stable").reset_index(drop=True)


def best_per_group(df: pd.DataFrame, metric: str, mode: str, by: str = "loss_type") -> pd.DataFrame:
    """The best finished trial of each value of `by` (e.g. the best beta for each loss type)."""
    done = finished(df, metric)
    if by not in done or done.empty:
        return rank(done, metric, mode).head(1)
    ranked = rank(done, metric, mode)
    return ranked.groupby(by, sort=False).head(1).reset_index(drop=True)


def pivot(df: pd.DataFrame, metric: str, index: str = "loss_type", columns: str = "beta") -> pd.DataFrame | None:
    """`index` x `columns` table of the final `metric` (mean where other axes vary)."""
    if index not in df or columns not in df or metric not in df:
        return None
    done = df[df["status"] == "FINISHED"]
    if done.empty:
        return None
    return done.pivot_table(index=index, columns=columns, values=metric, aggfunc="mean")


def history_frame(sweep: Sweep, metrics: list[str] | None = None) -> pd.DataFrame:
    """Per-step metrics in long form: one row per (trial, metric, step)."""
    runs = sweep.runs_with(metrics=None, params=(tracking.SWEPT_PREFIX, tracking.POINT))
    keys = metrics or sorted({k for run in runs for k in run.data.metrics if k != "global_step"})
    histories = metric_histories(tracking.client(sweep.uri), [r.info.run_id for r in runs], keys)
    rows = []
    for run in runs:
        ids = {"trial": run.info.run_name, "run_id": run.info.run_id, **tracking.swept_values(run.data.params)}
        for key in keys:
            rows += [
                {**ids, "metric": key, "step": m.step, "value": m.value}
                for m in histories.get((run.info.run_id, key), ())
            ]
    df = pd.DataFrame(rows)
    return df.sort_values(["trial", "metric", "step"], kind="stable").reset_index(drop=True) if len(df) else df


def render(df: pd.DataFrame, fmt: str = "table", index: bool = False) -> str:
    """A frame as terminal text, GitHub markdown, or JSON records."""
    if fmt == "json":
        return df.to_json(orient="records", indent=2) if not index else df.to_json(orient="index", indent=2)
    if fmt == "markdown":
        return df.to_markdown(index=index, floatfmt=".4g")
    with pd.option_context(
        "display.width",
        250,
        "display.max_columns",
        40,
        "display.max_rows",
        1000,
        "display.float_format",
        "{:.4g}".format,
    ):
        return df.to_string(index=index)


def terminal_view(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The per-trial table trimmed for a terminal: no ids, no empty columns, errors only if any,
    and of the best-over-history columns only the ranking metric's."""
    dropped = ["trial", "trial_id", "run_id"] + [c for c in df if c.startswith("best_") and c != f"best_{metric}"]
    shown = df.drop(columns=[c for c in dropped if c in df])
    shown = shown.dropna(axis="columns", how="all")
    if "error" in shown and not shown["error"].astype(bool).any():
        shown = shown.drop(columns="error")
    return shown


def _is_swept(column: str, runs) -> bool:
    return any(f"{tracking.SWEPT_PREFIX}{column}" in r.data.params for r in runs)


@dataclass
class Findings:
    """Everything a report says about a sweep, computed once for every way of showing it
    (terminal, markdown, JSON, HTML)."""

    sweep: Sweep
    metric: str
    trials: pd.DataFrame  # ranked by `metric`
    best: pd.DataFrame  # the best trial per loss type
    pivot: pd.DataFrame | None  # loss_type x beta
    repeats: pd.DataFrame | None  # per point over seeds
    verdict: str  # can the best point be told from the runner-up
    agreement: dict[str, Any] | None  # proxy vs judge
    importance: Any  # analysis.Importance
    base: dict[str, float]  # the base model's judged metrics
    objectives: dict[str, str]  # the trade-off shown: {metric: "max" or "min"}
    front: pd.DataFrame  # the finished trials no other beats on every objective, ranked

    @property
    def front_columns(self) -> list[str]:
        return [c for c in dict.fromkeys(["trial", *self.sweep.axes, *self.objectives]) if c in self.front]

    def front_line(self) -> str:
        """What the Pareto front is, in a line ("" where there is one objective only)."""
        if len(self.objectives) < 2:
            return ""
        said = " and ".join(
            f"{k} ({'higher' if how == 'max' else 'lower'} better)" for k, how in self.objectives.items()
        )
        done = int((self.trials["status"] == "FINISHED").sum()) if len(self.trials) else 0
        return f"Pareto front over {said}: {len(self.front)} of {done} finished trials, none beaten on every one by another"

    @property
    def best_columns(self) -> list[str]:
        cols = [c for c in self.trials.columns if c in self.sweep.axes] + [self.metric, "eval_margin/beta", "trial"]
        return [c for c in dict.fromkeys(cols) if c in self.best]

    def caveats(self) -> list[str]:
        df, lines = self.trials, []
        n_bad = int((~df["status"].isin(["FINISHED", "STOPPED_EARLY"])).sum()) if len(df) else 0
        n_stopped = int((df["status"] == "STOPPED_EARLY").sum()) if len(df) else 0
        if n_bad:
            lines.append(f"{n_bad} trial(s) did not finish (status FAILED/KILLED/RUNNING); they are ranked last.")
        if n_stopped:
            lines.append(f"{n_stopped} trial(s) stopped early by the scheduler, ranked by their last {self.metric}.")
        if harness.REGRESSED in df and (df[harness.REGRESSED] == 1).any():
            lost = df[df[harness.REGRESSED] == 1]
            named = ", ".join(f"{t} ({w:+.3g})" for t, w in zip(lost["trial"], lost[harness.WORST]))
            lines.append(
                f"{len(lost)} trial(s) fell below the base model by more than harness.margin on a benchmark "
                f"task ({harness.WORST}): {named}."
            )
        return lines

    def base_line(self) -> str:
        shown = ", ".join(f"{k.removeprefix(BASE_PREFIX)}={v:.4g}" for k, v in sorted(self.base.items()))
        shown = shown.replace(harness.BASE_PREFIX, harness.PREFIX)
        return f"the base model (adapter off) on the same prompts: {shown}" if self.base else ""


def findings(sweep: Sweep, metric: str | None = None, objectives: dict[str, str] | None = None) -> Findings:
    """`objectives`: the Pareto front's ({metric: "max" or "min"}); default: the ranking metric and,
    where judged, the answers' length (`statistics.objectives_for`)."""
    metric = metric or sweep.metric
    df = trials_frame(sweep)
    asked = [("--metric", metric)] if metric != sweep.metric else []  # the spec's own may be logged by none yet
    for field, name in asked + [("--objective", m) for m in objectives or {}]:
        _check_metric(df, field, name, sweep.axes)
    df = rank(df, metric, sweep.mode)
    repeats = repeats_frame(df, sweep.axes, metric, sweep.mode)
    objectives = objectives or objectives_for(df, metric, sweep.mode)
    return Findings(
        sweep=sweep,
        metric=metric,
        trials=df,
        best=best_per_group(df, metric, sweep.mode),
        pivot=pivot(df, metric),
        repeats=repeats,
        verdict=separability(df, repeats, sweep.axes, metric, sweep.mode),
        agreement=proxy_vs_judge(df),
        importance=axis_importance(df, sweep.axes, metric, sweep.mode),
        base={k: v for k, v in sweep.parent.data.metrics.items() if k.startswith((BASE_PREFIX, harness.BASE_PREFIX))},
        objectives=objectives,
        front=pareto_front(df, objectives),
    )


def _check_metric(df: pd.DataFrame, field: str, metric: str, axes: list[str]) -> None:
    """A metric to rank or weigh the trials by must be one they logged (once any has)."""
    logged = [c for c in df.columns if c not in ("status", "trial", "trial_id", "run_id", "error", *axes)]
    if len(df) and metric not in df:
        raise SpecError(
            field, unknown("metric", metric, logged, hint=None if len(logged) <= 20 else "a metric the trials logged")
        )


def report(sweep: Sweep, metric: str | None = None, fmt: str = "table", found: Findings | None = None) -> str:
    """The full report: per-trial table, best trial per loss type, loss_type x beta pivot,
    repeats over seeds, what mattered, the base model and the proxy vs the judge (`found`:
    the sweep's findings where the caller has them already)."""
    f = found or findings(sweep, metric)
    df, metric = f.trials, f.metric
    if fmt == "json":
        return json.dumps(
            {
                "sweep": sweep.name,
                "parent_run_id": sweep.parent_run_id,
                "ranked_by": metric,
                "mode": sweep.mode,
                "trials": json.loads(df.to_json(orient="records")),
                "best_per_loss_type": json.loads(f.best.to_json(orient="records")),
                "pivot": None if f.pivot is None else json.loads(f.pivot.to_json(orient="index")),
                "repeats": None if f.repeats is None else json.loads(f.repeats.to_json(orient="records")),
                "separability": f.verdict or None,
                "proxy_vs_judge": f.agreement,
                "importance": {
                    "note": f.importance.note,
                    "axes": json.loads(f.importance.table.to_json(orient="records")),
                },
                "base_model": f.base or None,
                "pareto_front": {
                    "objectives": f.objectives,
                    "trials": json.loads(f.front[f.front_columns].to_json(orient="records")),
                }
                if len(f.objectives) > 1
                else None,
            },
            indent=2,
        )
    heading = (lambda s: f"## {s}\n") if fmt == "markdown" else (lambda s: f"{s}\n")
    if df.empty:
        return heading(f"sweep {sweep.name}: no trial has started yet")
    parts = [
        heading(f"sweep {sweep.name}: {len(df)} trials, ranked by {metric} ({sweep.mode}, final value)"),
        render(terminal_view(df, metric), fmt),
    ]
    parts += ["\n" + line for line in f.caveats()]
    if len(f.best):
        parts += ["", heading("best trial per loss type"), render(f.best[f.best_columns], fmt)]
    if f.pivot is not None:
        parts += ["", heading(f"{metric}: loss_type x beta"), render(f.pivot, fmt, index=True)]
    if f.repeats is not None:
        parts += [
            "",
            heading(f"{metric} over seeds: mean, std, 95% confidence interval"),
            render(f.repeats, fmt),
            "",
            f.verdict,
        ]
    parts += ["", describe(f.importance)]
    if f.base:
        parts += ["", f.base_line()]
    if f.agreement is not None:
        parts += ["", describe_agreement(f.agreement)]
    if f.front_line():
        parts += ["", heading(f.front_line()), render(f.front[f.front_columns], fmt)]
    return "\n".join(parts)


def compare(a: Sweep, b: Sweep, metric: str | None = None, top: int = 3) -> pd.DataFrame:
    """The top configurations of two sweeps side by side (rows: sweep, rank)."""
    metric = metric or a.metric
    frames = []
    for sweep in (a, b):
        df = rank(trials_frame(sweep), metric, sweep.mode)
        df = df[df["status"] == "FINISHED"].head(top).copy()
        df.insert(0, "rank", range(1, len(df) + 1))
        df.insert(0, "sweep", sweep.name)
        frames.append(df)
    both = pd.concat(frames, ignore_index=True)
    keep = ["sweep", "rank"] + [c for c in both if c in a.axes or c in b.axes]
    keep += [m for m in (metric, "eval_rewards/margins", "eval_margin/beta", "eval_loss", "steps") if m in both]
    return both[list(dict.fromkeys(keep))]


def find_trial(sweep: Sweep, trial: str | None = None):
    """A trial's (latest) MLflow run by run name, trial id or run id (`store.find_run`);
    None: the best finished trial by the sweep's metric."""
    if trial is None:
        done = finished(trials_frame(sweep, best=False), sweep.metric)
        if done.empty:
            raise SweepNotFound(f"sweep {sweep.name} has no finished trial with {sweep.metric}")
        trial = done.iloc[0]["run_id"]
    return find_run(sweep, trial)
