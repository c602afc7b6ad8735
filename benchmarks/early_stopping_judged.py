"""Early stopping ranked by what the trials say: the default sweep (`beta_grid.yaml`, ranked by
`eval_judge/score`) run as a full grid, with `asha` and with `paired`, once each:

    python benchmarks/early_stopping_judged.py    # ~3 min on 2 cores; writes benchmarks/early_stopping_judged.json

For each scheduler: the share of the full grid's training steps it spent, the trial it found
(the best finished one by the judged score) and its regret (the full grid's best score minus the
full grid's score of the trial found). Trials run two at a time, so which trial reaches an
evaluation first, and so what an asynchronous scheduler compares it with, varies between runs.
`benchmarks/render.py` renders docs/benchmarks.md's table from the JSON.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "early_stopping_judged.json"
SPEC = REPO / "search_spaces" / "beta_grid.yaml"
METRIC = "eval_judge/score"
SCHEDULERS = {"none": [], "asha": ["scheduler.type=asha"], "paired": ["scheduler.type=paired"]}


def run(name: str, overrides: list[str], folder: Path) -> pd.DataFrame:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [sys.executable, "-m", "sweep", "run", str(SPEC)]
    for o in [*overrides, "scheduler.grace_period=1"] if overrides else []:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return pd.read_csv(folder / "results" / "beta_grid" / "summary.csv")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tables = {}
        for name, overrides in SCHEDULERS.items():
            folder = Path(tmp) / name
            folder.mkdir()
            tables[name] = run(name, overrides, folder)
    grid = tables["none"].set_index("trial")
    best = grid[METRIC].max()
    rows = {}
    for name, table in tables.items():
        done = table[table["status"] == "FINISHED"].sort_values(METRIC, ascending=False, kind="stable")
        found = done.iloc[0]["trial"]
        rows[name] = {
            "steps": int(table["steps"].sum()),
            "share_of_grid_steps": float(table["steps"].sum() / grid["steps"].sum()),
            "stopped_early": int((table["status"] == "STOPPED_EARLY").sum()),
            "found": found,
            "found_score_in_grid": float(grid.loc[found, METRIC]),
            "regret": float(best - grid.loc[found, METRIC]),
        }
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "spec": "search_spaces/beta_grid.yaml",
        "metric": METRIC,
        "grid_best": {"trials": list(grid.index[grid[METRIC] == best]), "score": float(best)},
        "schedulers": rows,
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
