"""Where a sweep stands, from MLflow alone (`sweep status`): counts, the best so far, the running
trials' steps, each failure's cause in a line; works while it runs, after it ended or crashed."""

from __future__ import annotations

import math
import time

import pandas as pd

from ..record import tracking
from ..record.store import Sweep, status_counts
from .tables import render


def status(sweep: Sweep) -> str:
    """Where a sweep stands, from MLflow alone: works while it runs, after it ended or crashed."""
    c = tracking.client(sweep.uri)
    shown = ("global_step", "loss", "rewards/accuracies", "rewards/margins", sweep.metric)
    runs = sweep.runs_with(metrics=shown, tags=(tracking.TAG_ERROR,), params=("trial.max_steps",))
    planned = int(sweep.parent.data.params.get("num_trials", 0) or 0)
    by_status = status_counts(runs)
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
        f"{counts['finished']}/{planned} finished, "
        + ", ".join(f"{v} {k}" for k, v in counts.items() if k != "finished"),
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
            for key in shown[1:]:
                if key in m:
                    row[key] = m[key]
            rows.append(row)
        lines += ["running:", render(pd.DataFrame(rows))]
    failed = [r for r in runs if r.info.status == "FAILED"]
    for r in failed:
        reason = (r.data.tags.get(tracking.TAG_ERROR) or "").strip().split("\n")[0]
        lines.append(f"failed: {r.info.run_name}: {reason}")
    return "\n".join(lines)


def fmt_duration(seconds: float) -> str:
    """`1h02m`, `3m05s`, `42s` (`?` for an unknown time)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _ago(seconds: float) -> str:
    return fmt_duration(max(0.0, seconds))
