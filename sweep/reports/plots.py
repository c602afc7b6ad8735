"""Figures for reports, with matplotlib (headless): PNG files a person can paste into a report."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt
import pandas as pd

from .statistics import PROXY, pareto_front
from .tables import CURVES, history_frame

MAX_CURVES = 12  # training curves of the best trials only: beyond a dozen lines nobody tells them apart


def sweep_figures(
    sweep,
    trials: pd.DataFrame,
    metric: str,
    out_dir: Path,
    title: str | None = None,
    axes: list[str] | None = None,
    objectives: dict[str, str] | None = None,
) -> list[Path]:
    """`write_plots` for a sweep in the store: its trials frame and its training curves, read
    from MLflow (what a sweep's end, `report --plots` and `report --html` draw)."""
    history = history_frame(sweep, metrics=list(CURVES))
    return write_plots(trials, history, metric, out_dir, title or sweep.name, axes=axes, objectives=objectives)


def write_plots(
    df: pd.DataFrame,
    history: pd.DataFrame,
    metric: str,
    out_dir: Path,
    title: str,
    axes: list[str] | None = None,
    objectives: dict[str, str] | None = None,
) -> list[Path]:
    """Every figure that the sweep's axes allow (`objectives`: the Pareto front's, its first two
    drawn against each other); returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    done = df[(df["status"] == "FINISHED")] if "status" in df else df
    written = []
    for m in dict.fromkeys([metric, PROXY]):  # the ranking metric and, if another, the proxy beside it
        for x in ("beta", "learning_rate"):
            if x in done and m in done and done[x].nunique() > 1:
                written.append(metric_vs(done, x, m, out_dir / f"{_slug(m)}_vs_{x}.png", title))
    varied = [a for a in (axes or []) if a in done and done[a].astype(str).nunique() > 1]
    if metric in done and done[metric].notna().sum() >= 2 and varied:
        written.append(parallel_coordinates(done, varied, metric, out_dir / "parallel_coordinates.png", title))
        if sum(_numeric(done[a]) for a in varied) >= 2:
            written.append(metric_by_axis(done, varied, metric, out_dir / f"{_slug(metric)}_by_axis.png", title))
    if objectives and len(objectives) > 1:
        x, y = list(objectives)[:2]
        if {x, y} <= set(done) and done[[x, y]].notna().all(axis=1).sum() >= 2:
            written.append(pareto_scatter(df, objectives, out_dir / "pareto_front.png", title))
    if len(history):
        capped = metric in done and len(done) > MAX_CURVES
        shown = done["trial"].head(MAX_CURVES) if capped else history["trial"]
        heading = f"{title} (the {MAX_CURVES} best of {len(done)} by {metric})" if capped else title
        written.append(training_curves(history[history["trial"].isin(shown)], out_dir / "training_curves.png", heading))
    return written


def parallel_coordinates(df: pd.DataFrame, axes: list[str], metric: str, path: Path, title: str) -> Path:
    """One line per finished trial across every varied axis and the metric, coloured by the
    metric: which combinations the good trials share. Numeric axes keep their order (log
    scale where they span 20x or more), other values are spaced evenly."""
    import numpy as np

    df = df[df[metric].notna()]
    columns = axes + [metric]
    positions, ticks = {}, {}
    for col in columns:
        positions[col], ticks[col] = _unit_scale(df[col])
    ticks[metric] = [ticks[metric][0], ticks[metric][-1]]  # a label per trial would be unreadable
    fig, ax = plt.subplots(figsize=(max(6.4, 2.2 * len(columns)), 4.6))
    norm = plt.Normalize(df[metric].min(), df[metric].max())
    cmap = plt.get_cmap("viridis")
    order = np.argsort(df[metric].to_numpy())  # the best drawn last, on top
    xs = list(range(len(columns)))
    for i in order:
        ys = [positions[c][i] for c in columns]
        ax.plot(xs, ys, color=cmap(norm(df[metric].iloc[i])), linewidth=1.6, alpha=0.85)
    for x, col in zip(xs, columns):
        ax.axvline(x, color="black", linewidth=0.8)
        for y, label in ticks[col]:
            ax.text(x + 0.03, y, label, fontsize=7, va="center")
    ax.set_xticks(xs, columns, rotation=15)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(columns) - 0.6)
    ax.set_ylim(-0.05, 1.05)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=f"final {metric}")
    ax.set_title(f"{title}: parallel coordinates ({len(df)} finished trials)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def metric_by_axis(df: pd.DataFrame, axes: list[str], metric: str, path: Path, title: str) -> Path:
    """One panel per varied axis: every finished trial's metric at its value of that axis
    (the others varying), and the mean per value."""
    fig, panels = plt.subplots(1, len(axes), figsize=(3.6 * len(axes) + 0.8, 3.8), squeeze=False, sharey=True)
    for ax, axis in zip(panels[0], axes):
        part = df[df[metric].notna()]
        if _numeric(part[axis]):
            x = part[axis].astype(float)
            means = part.groupby(axis)[metric].mean().sort_index()
            ax.scatter(x, part[metric], alpha=0.6, s=18)
            ax.plot(means.index.astype(float), means.to_numpy(), color="black", marker="o", linewidth=1.2, label="mean")
            if _log_scaled(x):
                ax.set_xscale("log")
        else:
            labels = sorted(part[axis].astype(str).unique())
            index = {v: i for i, v in enumerate(labels)}
            ax.scatter(part[axis].astype(str).map(index), part[metric], alpha=0.6, s=18)
            means = part.groupby(part[axis].astype(str))[metric].mean()
            ax.plot([index[v] for v in means.index], means.to_numpy(), "ko", label="mean")
            ax.set_xticks(range(len(labels)), labels, rotation=15)
        ax.set_xlabel(axis)
        ax.grid(alpha=0.3)
    panels[0][0].set_ylabel(f"final {metric}")
    panels[0][0].legend(fontsize="small")
    fig.suptitle(f"{title}: {metric} by axis")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _log_scaled(values) -> bool:
    """Whether positive values span 20x or more (beta 0.01..10, learning rates): drawn on a log axis."""
    return min(values) > 0 and max(values) / min(values) >= 20


def _numeric(values: pd.Series) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _unit_scale(values: pd.Series) -> tuple[list[float], list[tuple[float, str]]]:
    """Values mapped onto [0, 1] and the (position, label) ticks of the values present."""
    import math

    if _numeric(values):
        x = [float(v) for v in values]
        t = [math.log10(v) for v in x] if _log_scaled(x) else x
        lo, hi = min(t), max(t)
        pos = [(v - lo) / (hi - lo) if hi > lo else 0.5 for v in t]
        return pos, sorted({(p, f"{v:.3g}") for p, v in zip(pos, x)})
    labels = sorted({str(v) for v in values})
    where = {v: (i / (len(labels) - 1) if len(labels) > 1 else 0.5) for i, v in enumerate(labels)}
    return [where[str(v)] for v in values], [(where[v], v) for v in labels]


def metric_vs(df: pd.DataFrame, x: str, metric: str, path: Path, title: str) -> Path:
    """`metric` against a swept value, one line per loss type (mean over any other axes)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    groups = df.groupby("loss_type") if "loss_type" in df else [("all trials", df)]
    for name, group in groups:
        stats = group.groupby(x)[metric].agg(["mean", "min", "max"]).sort_index()
        ax.plot(stats.index, stats["mean"], marker="o", label=str(name))
        if (stats["max"] > stats["min"]).any():  # other axes vary: show their spread
            ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.15)
    if _log_scaled(df[x].astype(float)):
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


def pareto_scatter(df: pd.DataFrame, objectives: dict[str, str], path: Path, title: str) -> Path:
    """The finished trials on the first two objectives, the Pareto front over all of them ringed
    and joined: the trials a person chooses among when both matter."""
    (x, x_how), (y, y_how) = list(objectives.items())[:2]
    done = df[(df["status"] == "FINISHED") & df[[x, y]].notna().all(axis=1)]
    front = pareto_front(df, objectives).sort_values(x)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.scatter(done[x], done[y], color="tab:grey", alpha=0.6, label="trials")
    ax.plot(front[x], front[y], color="tab:red", marker="o", fillstyle="none", markersize=10, label="Pareto front")
    for (px, py), same in front.groupby([x, y], sort=False):  # tied trials share one label
        names = "\n".join(map(str, same["trial"]))
        ax.annotate(names, (px, py), fontsize=7, xytext=(-6, 6), textcoords="offset points", ha="right")
    ax.set_xlabel(f"{x} ({'higher' if x_how == 'max' else 'lower'} better)")
    ax.set_ylabel(f"{y} ({'higher' if y_how == 'max' else 'lower'} better)")
    ax.set_title(f"{title}: the Pareto front")
    ax.grid(alpha=0.3)
    ax.legend()
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
