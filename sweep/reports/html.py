"""`report --html FILE`: the whole report as one self-contained page.

Tables come from pandas (`DataFrame.to_html`), figures from `plots.sweep_figures` embedded as
base64 PNGs, so the file opens offline in any browser, can be mailed, and is attached to the
sweep's parent run, where the MLflow UI shows it.
"""

from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path

import pandas as pd

from ..record import store
from ..record.tracking import client
from . import answers, tables

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.text, .samples td { text-align: left; white-space: pre-wrap; max-width: 40em; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; } .wide { overflow-x: auto; }
"""


def write_html(
    sweep: store.Sweep,
    path: Path,
    metric: str | None = None,
    top: int = 3,
    attach: bool = True,
    found: tables.Findings | None = None,
) -> Path:
    """Write the report of `sweep` to `path` (and attach it to the parent run as
    `report/<file name>` unless `attach` is false); `found`: its findings, where computed already."""
    from .plots import sweep_figures

    f = found or tables.findings(sweep, metric)
    sections = [f"<h1>sweep {_e(sweep.name)}</h1>", _p(_summary_line(f))]
    if f.trials.empty:
        sections.append(_p("no trial has started yet"))
    else:
        sections += ["<h2>trials</h2>", _table(tables.terminal_view(f.trials, f.metric))]
        sections += [_p(line) for line in f.caveats()]
        if len(f.best):
            sections += ["<h2>best trial per loss type</h2>", _table(f.best[f.best_columns])]
        if f.pivot is not None:
            sections += [f"<h2>{_e(f.metric)}: loss_type x beta</h2>", _table(f.pivot, index=True)]
        if f.repeats is not None:
            sections += ["<h2>over seeds: mean, std, 95% confidence interval</h2>", _table(f.repeats), _p(f.verdict)]
        sections += ["<h2>what mattered</h2>", _p(f.importance.note)]
        if not f.importance.table.empty:
            sections.append(_table(f.importance.table))
        if f.base:
            sections.append(_p(f.base_line()))
        if f.agreement is not None:
            sections.append(_p(tables.describe_agreement(f.agreement)))
        if f.front_line():
            sections += [f"<h2>{_e(f.front_line())}</h2>", _table(f.front[f.front_columns])]
        with tempfile.TemporaryDirectory() as tmp:
            figures = sweep_figures(sweep, f.trials, f.metric, Path(tmp), axes=sweep.axes, objectives=f.objectives)
            if figures:
                sections.append("<h2>figures</h2>")
                sections += [_img(fig) for fig in figures]
        done = tables.finished(f.trials, f.metric)  # ranked as the page ranks them
        judged = answers.judged_frame(sweep, done.iloc[0]["run_id"]) if len(done) else None
        if judged is not None:
            keep = [c for c in ("prompt", "base", "answer", "base_score", "score", "outcome") if c in judged]
            sections += [
                "<h2>the best trial's judged answers (last evaluation)</h2>",
                _table(judged[keep or list(judged.columns)], css="samples"),
            ]
        samples = answers.samples_frame(sweep, top=top, trials=f.trials)
        if len(samples):
            sections += [
                "<h2>samples: the base model and the top trials on held-out prompts</h2>",
                _table(samples, css="samples"),
            ]
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>sweep {_e(sweep.name)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    if attach:
        client(sweep.uri).log_artifact(sweep.parent_run_id, str(path), artifact_path="report")
    return path


def _summary_line(f: tables.Findings) -> str:
    counts = f.trials["status"].value_counts().to_dict() if len(f.trials) else {}
    shown = ", ".join(f"{n} {status.lower()}" for status, n in counts.items())
    return (
        f"{len(f.trials)} trials ({shown}); ranked by {f.metric} ({f.sweep.mode}, final value); "
        f"parent run {f.sweep.parent_run_id} in {f.sweep.uri}"
    )


def _table(df: pd.DataFrame, index: bool = False, css: str = "") -> str:
    table = df.to_html(index=index, float_format=lambda v: f"{v:.4g}", na_rep="", classes=css, border=0, escape=True)
    return f"<div class='wide'>{table}</div>"


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    name = _e(path.stem)
    return f"<figure><img alt='{name}' src='data:image/png;base64,{data}'><figcaption class='note'>{name}</figcaption></figure>"


def _p(text: str) -> str:
    return f"<p class='note'>{_e(text)}</p>" if text else ""


def _e(text: str) -> str:
    return html.escape(str(text))
