"""What the trials answered: the generations of the best trials beside the base model's
(`samples_frame`, `sweep report --samples`), and a trial's last judged evaluation per prompt."""

from __future__ import annotations

import pandas as pd

from ..record import tracking
from ..record.judge_tables import TABLE_DIR
from ..record.store import Sweep, SweepNotFound, artifact_table
from .tables import find_trial, trials_frame


def samples_frame(sweep: Sweep, top: int = 3, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """The generations of the top `top` finished trials beside the base model's, one row per
    prompt. `trials`: the sweep's trials frame, ranked, where the caller has it already."""
    c = tracking.client(sweep.uri)
    df = trials_frame(sweep, best=False) if trials is None else trials
    done = df[df["status"] == "FINISHED"].head(top)
    table = None
    for _, row in done.iterrows():
        if not any(a.path == tracking.SAMPLES for a in c.list_artifacts(row["run_id"])):
            continue
        got = artifact_table(sweep.uri, row["run_id"], tracking.SAMPLES)
        if table is None:
            table = got[["prompt", "base"]].copy()
        table[row["trial"]] = got["answer"].values
    return table if table is not None else pd.DataFrame(columns=["prompt", "base"])


def judged_frame(sweep: Sweep, trial: str | None = None) -> pd.DataFrame | None:
    """A trial's (default: the best's) last judged evaluation, one row per prompt; None where
    the sweep judged nothing."""
    try:
        run = find_trial(sweep, trial)
    except SweepNotFound:
        if trial is not None:
            raise
        return None  # no finished trial yet
    tables = sorted(a.path for a in tracking.client(sweep.uri).list_artifacts(run.info.run_id, TABLE_DIR))
    return artifact_table(sweep.uri, run.info.run_id, tables[-1]) if tables else None


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
