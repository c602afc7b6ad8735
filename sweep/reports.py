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
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import tracking
from .judge import BASE_PREFIX, LENGTH, SCORE, WIN_RATE
from .spec import DEFAULT_METRIC

# Final metrics shown on the terminal (export has every metric).
SUMMARY_METRICS = [
    SCORE,
    WIN_RATE,
    LENGTH,
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
PROXY, JUDGED = DEFAULT_METRIC, SCORE  # the implicit-reward proxy and the judged generations


class SweepNotFound(LookupError):
    pass


@dataclass
class Sweep:
    """A sweep in the store: its experiment, its (latest) parent run, and how it ranks trials."""

    uri: str
    name: str
    experiment_id: str
    parent: Any  # mlflow Run
    axes: list[str]
    metric: str
    mode: str

    @property
    def parent_run_id(self) -> str:
        return self.parent.info.run_id


def find_sweep(uri: str, name: str) -> Sweep:
    """The latest sweep called `name` in the store at `uri`."""
    parent = tracking.latest_parent_run(uri, name)
    if parent is None:
        known = ", ".join(s["sweep"] for s in list_sweeps(uri)) or "none"
        raise SweepNotFound(f"no sweep named {name!r} in {uri}; sweeps there: {known}")
    return sweep_from_run(uri, parent.info.run_id)


def sweep_from_run(uri: str, parent_run_id: str) -> Sweep:
    """The sweep whose parent run is `parent_run_id`."""
    c = tracking.client(uri)
    parent = c.get_run(parent_run_id)
    exp = c.get_experiment(parent.info.experiment_id)
    params = parent.data.params
    axes = [a for a in params.get("axes", "").split(",") if a]
    return Sweep(uri, exp.name, exp.experiment_id, parent, axes, params.get("metric", DEFAULT_METRIC), params.get("mode", "max"))


def list_sweeps(uri: str) -> list[dict[str, Any]]:
    """Every sweep (parent run) in the store, newest first, with trial counts by status."""
    c = tracking.client(uri)
    rows = []
    for exp in c.search_experiments():
        for parent in c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.TAG_KIND}` = 'parent'"):
            children = tracking.latest_attempts(tracking.trial_runs(uri, exp.experiment_id, parent.info.run_id))
            counts = _status_counts(children)
            rows.append(
                {
                    "sweep": exp.name,
                    "status": parent.info.status,
                    "trials": len(children),
                    "finished": counts.get("FINISHED", 0),
                    "failed": counts.get("FAILED", 0),
                    "killed": counts.get("KILLED", 0),
                    "running": counts.get("RUNNING", 0),
                    "planned": int(parent.data.params.get("num_trials", 0) or 0),
                    "started": pd.Timestamp(parent.info.start_time, unit="ms").strftime("%Y-%m-%d %H:%M"),
                    "parent_run_id": parent.info.run_id,
                    "experiment_id": exp.experiment_id,
                }
            )
    return sorted(rows, key=lambda r: r["started"], reverse=True)


def trials_frame(sweep: Sweep, *, all_metrics: bool = False, best: bool = True) -> pd.DataFrame:
    """One row per trial: ids, status, swept values, final metrics (and best-over-history).

    Column order is stable: ids and status, the swept values in the spec's axis order, the
    metrics (SUMMARY_METRICS first, then the rest alphabetically), steps, runtime, error.
    Rows are ranked by the sweep's metric, best first; trials without it (failed, killed)
    come last and are kept, never dropped.
    """
    c = tracking.client(sweep.uri)
    runs = tracking.latest_attempts(tracking.trial_runs(sweep.uri, sweep.experiment_id, sweep.parent_run_id))
    rows = []
    for run in runs:
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        row: dict[str, Any] = {
            "trial": run.info.run_name,
            "trial_id": tags.get(tracking.TAG_TRIAL_ID),
            "run_id": run.info.run_id,
            "status": "STOPPED_EARLY" if tags.get(tracking.TAG_STOPPED_EARLY) else run.info.status,
        }
        for key, value in params.items():
            if key.startswith(tracking.SWEPT_PREFIX):
                row[key.removeprefix(tracking.SWEPT_PREFIX)] = _number(value)
        # A swept value wins over a metric of the same name: Trainer logs the *scheduled*
        # `learning_rate` at every step, which would otherwise replace the swept one.
        row.update({k: v for k, v in metrics.items() if k not in row})
        beta = row.get("beta", _number(params.get("train.beta", "0.1")))  # TRL's default beta is 0.1
        if isinstance(beta, (int, float)) and beta > 0 and "eval_rewards/margins" in metrics:
            row["eval_margin/beta"] = metrics["eval_rewards/margins"] / beta
        if best:
            for key, how in BEST_OF.items():
                if key not in metrics:  # never logged: no history to ask the store for
                    continue
                history = [m.value for m in c.get_metric_history(run.info.run_id, key)]
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


def finished(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The FINISHED trials that have `metric` (an empty frame if none has it)."""
    return df[(df["status"] == "FINISHED") & df[metric].notna()] if metric in df else df.iloc[0:0]


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


def repeats_frame(df: pd.DataFrame, axes: list[str], metric: str, mode: str) -> pd.DataFrame | None:
    """Repeats over `seed` grouped per point: n, mean, std and a 95% confidence interval
    (Student's t) of `metric`, best mean first. None when the sweep has no seed axis."""
    if "seed" not in df or metric not in df:
        return None
    done = _repeats(df, axes, metric)
    if done is None:
        return None
    from scipy import stats  # ~0.5 s to import: only where there are repeats

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
    return head + (f"NOT separable ({test}; {intervals}): the difference may be seed noise; "
                   "treat them as tied, or add seeds.")  # fmt: skip


def _repeats(df: pd.DataFrame, axes: list[str], metric: str) -> pd.DataFrame | None:
    """Finished trials with `metric`, each with `point`: its label without the seed (None if none)."""
    keys = [a for a in axes if a != "seed" and a in df]
    done = finished(df, metric)
    if done.empty or not keys:
        return None
    return done.assign(point=[_point_name(row, keys) for _, row in done.iterrows()])


def _point_name(row, keys: list[str]) -> str:
    return ",".join(f"{k}={row[k]:g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in keys if not _isnull(row[k]))


def _isnull(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def samples_frame(sweep: Sweep, top: int = 3) -> pd.DataFrame:
    """The generations of the top `top` finished trials beside the base model's, one row per prompt."""
    from .trial import SAMPLES_FILE

    c = tracking.client(sweep.uri)
    df = trials_frame(sweep, best=False)
    done = df[df["status"] == "FINISHED"].head(top)
    table = None
    with tempfile.TemporaryDirectory() as tmp:
        for _, row in done.iterrows():
            if not any(a.path == SAMPLES_FILE for a in c.list_artifacts(row["run_id"])):
                continue
            data = json.loads(Path(c.download_artifacts(row["run_id"], SAMPLES_FILE, tmp)).read_text())
            got = pd.DataFrame(data["data"], columns=data["columns"])
            if table is None:
                table = got[["prompt", "base"]].copy()
            table[row["trial"]] = got["answer"].values
    return table if table is not None else pd.DataFrame(columns=["prompt", "base"])


def render_samples(table: pd.DataFrame) -> str:
    """Per prompt: the prompt, the base model's answer, then each trial's."""
    if table.empty:
        return "no samples logged (set samples.prompts > 0 in the spec)"
    width = max(len(c) for c in table.columns)
    blocks = []
    for _, row in table.iterrows():
        lines = [f"prompt: {row['prompt']}"] + [f"  {c:<{width}} | {row[c]}" for c in table.columns if c != "prompt"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def history_frame(sweep: Sweep, metrics: list[str] | None = None) -> pd.DataFrame:
    """Per-step metrics in long form: one row per (trial, metric, step)."""
    c = tracking.client(sweep.uri)
    rows = []
    for run in tracking.latest_attempts(tracking.trial_runs(sweep.uri, sweep.experiment_id, sweep.parent_run_id)):
        swept = {k.removeprefix(tracking.SWEPT_PREFIX): _number(v) for k, v in run.data.params.items() if k.startswith(tracking.SWEPT_PREFIX)}
        keys = metrics or sorted(k for k in run.data.metrics if k != "global_step")
        for key in keys:
            for m in c.get_metric_history(run.info.run_id, key):
                rows.append({"trial": run.info.run_name, "run_id": run.info.run_id, **swept, "metric": key, "step": m.step, "value": m.value})
    df = pd.DataFrame(rows)
    return df.sort_values(["trial", "metric", "step"], kind="stable").reset_index(drop=True) if len(df) else df


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
    line = f"proxy vs judge over {a['trials']} finished trials: Spearman rank correlation of {PROXY} and {JUDGED} = {rho}"
    if a["proxy_best"] == a["judge_best"]:
        return f"{line}; both pick {a['judge_best']}"
    return f"{line}\nthey pick different winners: {PROXY} picks {a['proxy_best']}, {JUDGED} picks {a['judge_best']}"


def render(df: pd.DataFrame, fmt: str = "table", index: bool = False) -> str:
    """A frame as terminal text, GitHub markdown, or JSON records."""
    if fmt == "json":
        return df.to_json(orient="records", indent=2) if not index else df.to_json(orient="index", indent=2)
    if fmt == "markdown":
        return df.to_markdown(index=index, floatfmt=".4g")
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_rows", 1000,
                           "display.float_format", "{:.4g}".format):  # fmt: skip
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


def _number(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def report(sweep: Sweep, metric: str | None = None, fmt: str = "table") -> str:
    """The full report: per-trial table, best trial per loss type, loss_type x beta pivot."""
    metric = metric or sweep.metric
    df = rank(trials_frame(sweep), metric, sweep.mode)
    best = best_per_group(df, metric, sweep.mode)
    table = pivot(df, metric)
    repeats = repeats_frame(df, sweep.axes, metric, sweep.mode)
    verdict = separability(df, repeats, sweep.axes, metric, sweep.mode)
    agreement = proxy_vs_judge(df)
    base = {k: v for k, v in sweep.parent.data.metrics.items() if k.startswith(BASE_PREFIX)}
    n_bad = int((~df["status"].isin(["FINISHED", "STOPPED_EARLY"])).sum()) if len(df) else 0
    n_stopped = int((df["status"] == "STOPPED_EARLY").sum()) if len(df) else 0
    if fmt == "json":
        return json.dumps(
            {
                "sweep": sweep.name,
                "parent_run_id": sweep.parent_run_id,
                "ranked_by": metric,
                "mode": sweep.mode,
                "trials": json.loads(df.to_json(orient="records")),
                "best_per_loss_type": json.loads(best.to_json(orient="records")),
                "pivot": None if table is None else json.loads(table.to_json(orient="index")),
                "repeats": None if repeats is None else json.loads(repeats.to_json(orient="records")),
                "separability": verdict or None,
                "proxy_vs_judge": agreement,
                "base_model": base or None,
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
    if n_bad:
        parts.append(f"\n{n_bad} trial(s) did not finish (status FAILED/KILLED/RUNNING); they are ranked last.")
    if n_stopped:
        parts.append(f"\n{n_stopped} trial(s) stopped early by the scheduler, ranked by their last {metric}.")
    if len(best):
        cols = [c for c in df.columns if c in sweep.axes] + [metric, "eval_margin/beta", "trial"]
        parts += ["", heading("best trial per loss type"), render(best[[c for c in dict.fromkeys(cols) if c in best]], fmt)]
    if table is not None:
        parts += ["", heading(f"{metric}: loss_type x beta"), render(table, fmt, index=True)]
    if repeats is not None:
        parts += ["", heading(f"{metric} over seeds: mean, std, 95% confidence interval"), render(repeats, fmt), "", verdict]
    if base:
        shown = ", ".join(f"{k.removeprefix(BASE_PREFIX)}={v:.4g}" for k, v in sorted(base.items()))
        parts += ["", f"the base model (adapter off) on the same prompts: {shown}"]
    if agreement is not None:
        parts += ["", describe_agreement(agreement)]
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


def status(sweep: Sweep) -> str:
    """Where a sweep stands, from MLflow alone: works while it runs, after it ended or crashed."""
    c = tracking.client(sweep.uri)
    runs = tracking.latest_attempts(tracking.trial_runs(sweep.uri, sweep.experiment_id, sweep.parent_run_id))
    planned = int(sweep.parent.data.params.get("num_trials", 0) or 0)
    by_status = _status_counts(runs)
    parent = c.get_run(sweep.parent_run_id)  # fresh: the sweep may have moved on
    started = pd.Timestamp(parent.info.start_time, unit="ms")
    age = time.time() - parent.info.start_time / 1000
    counts = {
        "finished": by_status.get("FINISHED", 0),
        "running": by_status.get("RUNNING", 0),
        "pending": max(0, planned - len(runs)),
        "failed": by_status.get("FAILED", 0),
        "killed": by_status.get("KILLED", 0),
    }
    lines = [
        f"sweep {sweep.name}: {parent.info.status} (started {started:%Y-%m-%d %H:%M:%S} UTC, {_ago(age)} ago)",
        f"{counts['finished']}/{planned} finished, " + ", ".join(f"{v} {k}" for k, v in counts.items() if k != "finished"),
    ]
    done = [r for r in runs if r.info.status == "FINISHED" and sweep.metric in r.data.metrics]
    if done:
        pick = max if sweep.mode == "max" else min
        best = pick(done, key=lambda r: r.data.metrics[sweep.metric])
        lines.append(f"best {sweep.metric}={best.data.metrics[sweep.metric]:.4g} ({best.info.run_name})")
    running = [r for r in runs if r.info.status == "RUNNING"]
    if running:
        rows = []
        for r in running:
            m = r.data.metrics
            step = int(m.get("global_step", 0))
            total = r.data.params.get("trial.max_steps", "?")
            row = {"trial": r.info.run_name, "step": f"{step}/{total}"}
            for key in ("loss", "rewards/accuracies", "rewards/margins", sweep.metric):
                if key in m:
                    row[key] = m[key]
            rows.append(row)
        lines += ["running:", render(pd.DataFrame(rows))]
    failed = [r for r in runs if r.info.status == "FAILED"]
    for r in failed:
        reason = (r.data.tags.get(tracking.TAG_ERROR) or "").strip().split("\n")[0]
        lines.append(f"failed: {r.info.run_name}: {reason}")
    return "\n".join(lines)


def find_trial(sweep: Sweep, trial: str | None = None):
    """A trial's (latest) MLflow run: `trial` is a run name (e.g. `loss_type=ipo,beta=0.1`), a
    trial id, or a run id (or a prefix of one); None: the best finished trial by the sweep's metric."""
    runs = tracking.latest_attempts(tracking.trial_runs(sweep.uri, sweep.experiment_id, sweep.parent_run_id))
    if trial is None:
        df = trials_frame(sweep, best=False)
        done = finished(df, sweep.metric)
        if done.empty:
            raise SweepNotFound(f"sweep {sweep.name} has no finished trial with {sweep.metric}")
        trial = done.iloc[0]["run_id"]
    matches = [r for r in runs if trial in (r.info.run_name, r.data.tags.get(tracking.TAG_TRIAL_ID))]
    matches = matches or [r for r in runs if r.info.run_id.startswith(trial) or (r.data.tags.get(tracking.TAG_TRIAL_ID) or "").startswith(trial)]
    if not matches:
        names = ", ".join(r.info.run_name for r in runs) or "none"
        raise SweepNotFound(f"no trial {trial!r} in sweep {sweep.name}; trials: {names}")
    return matches[-1]  # the latest attempt at that point


def trial_log(sweep: Sweep, trial: str) -> str:
    """A trial's full stdout/stderr: the MLflow artifact once it ended, the live file while it runs."""
    run = find_trial(sweep, trial)
    c = tracking.client(sweep.uri)
    if any(a.path == "trial.log" for a in c.list_artifacts(run.info.run_id)):
        with tempfile.TemporaryDirectory() as tmp:
            return Path(c.download_artifacts(run.info.run_id, "trial.log", tmp)).read_text(errors="replace")
    live = run.data.tags.get(tracking.TAG_LOG_PATH)
    if live and Path(live).exists():
        return Path(live).read_text(errors="replace")
    raise SweepNotFound(f"trial {run.info.run_name} has no log yet (status {run.info.status})")


def _status_counts(runs) -> dict[str, int]:
    """{MLflow status: number of runs}."""
    return pd.Series([r.info.status for r in runs], dtype=object).value_counts().to_dict()


def _ago(seconds: float) -> str:
    from .progress import fmt_duration

    return fmt_duration(max(0.0, seconds))
