"""Figures for reports, with matplotlib (headless): PNG files a person can paste into a report."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt
import pandas as pd

from .reports import CURVES, PROXY


def write_plots(df: pd.DataFrame, history: pd.DataFrame, metric: str, out_dir: Path, title: str) -> list[Path]:
    """Every figure that the sweep's axes allow; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    done = df[(df["status"] == "FINISHED")] if "status" in df else df
    written = []
    for m in dict.fromkeys([metric, PROXY]):  # the ranking metric and, if another, the proxy beside it
        for x in ("beta", "learning_rate"):
            if x in done and m in done and done[x].nunique() > 1:
                written.append(metric_vs(done, x, m, out_dir / f"{_slug(m)}_vs_{x}.png", title))
    if len(history):
        written.append(training_curves(history, out_dir / "training_curves.png", title))
    return written


def metric_vs(df: pd.DataFrame, x: str, metric: str, path: Path, title: str) -> Path:
    """`metric` against a swept value, one line per loss type (mean over any other axes)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    groups = df.groupby("loss_type") if "loss_type" in df else [("all trials", df)]
    for name, group in groups:
        stats = group.groupby(x)[metric].agg(["mean", "min", "max"]).sort_index()
        ax.plot(stats.index, stats["mean"], marker="o", label=str(name))
        if (stats["max"] > stats["min"]).any():  # other axes vary: show their spread
            ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.15)
    values = df[x].astype(float)
    if values.min() > 0 and values.max() / values.min() >= 20:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(f"final {metric}")
    if metric.endswith("accuracies"):
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_title(f"{title}: {metric} vs {x}")
    ax.grid(alpha=0.3)
    ax.legend(title="loss_type" if "loss_type" in df else None)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def training_curves(history: pd.DataFrame, path: Path, title: str) -> Path:
    """Per-step reward margins and accuracies (train and held-out) of every trial, side by side."""
    keys = [k for k in CURVES if k in set(history["metric"])]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 + 4 * len(keys), 4.5), squeeze=False)
    axes = axes[0]
    for ax, key in zip(axes, keys):
        part = history[history["metric"] == key]
        for trial, rows in part.groupby("trial", sort=True):
            marker = "o" if key.startswith("eval_") else None  # evals are few points
            ax.plot(rows["step"], rows["value"], linewidth=1.2, marker=marker, markersize=4, label=trial)
        ax.set_xlabel("training step")
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize="small", title="trial")
    fig.suptitle(f"{title}: training curves")
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _slug(metric: str) -> str:
    return metric.replace("/", "_")
