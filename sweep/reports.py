"""Summary tables, read from MLflow (the source of truth) with pandas."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from . import tracking

# Final metrics shown per trial. Raw loss and margins are not comparable across loss types
# and betas (IPO losses are ~25 where sigmoid's are ~0.69; margins scale with beta), so the
# table leads with held-out preference accuracy and shows margin / beta beside the margin.
SUMMARY_METRICS = [
    "eval_rewards/accuracies",
    "eval_rewards/margins",
    "eval_loss",
    "rewards/accuracies",
    "rewards/margins",
    "loss",
    "train_runtime",
]


def summary_table(uri: str, experiment_id: str, parent_run_id: str, spec=None) -> pd.DataFrame:
    """One row per trial run of a sweep: swept values, status, final metrics, run id.

    Sorted by the spec's ranking metric (best first, trials without it last).
    """
    rows = []
    for run in tracking.trial_runs(uri, experiment_id, parent_run_id):
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        row: dict[str, Any] = {"trial": run.info.run_name, "status": run.info.status}
        for key, value in params.items():
            if key.startswith(tracking.SWEPT_PREFIX):
                row[key.removeprefix(tracking.SWEPT_PREFIX)] = _number(value)
        for key in SUMMARY_METRICS:
            row[key] = metrics.get(key, math.nan)
        beta = row.get("beta", _number(params.get("train.beta", "0.1")))
        if isinstance(beta, float) and beta > 0:
            row["eval_margin/beta"] = row["eval_rewards/margins"] / beta
        row["steps"] = metrics.get("global_step", math.nan)
        row["error"] = (tags.get(tracking.TAG_ERROR) or "").split("\n")[0]
        row["trial_id"] = tags.get(tracking.TAG_TRIAL_ID)
        row["run_id"] = run.info.run_id
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    metric = spec.metric if spec is not None else SUMMARY_METRICS[0]
    if metric in df:
        df = df.sort_values(metric, ascending=(spec is not None and spec.mode == "min"), na_position="last")
    return df.reset_index(drop=True)


def format_summary(df: pd.DataFrame) -> str:
    """The per-trial table as text for the terminal (ids and empty columns left out)."""
    if df.empty:
        return "(no trials)"
    shown = df.drop(columns=[c for c in ("run_id", "trial_id", "trial") if c in df])
    shown = shown.dropna(axis="columns", how="all")
    if "error" in shown and not shown["error"].astype(bool).any():
        shown = shown.drop(columns="error")
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        return shown.to_string(index=False)


def _number(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value
