"""Where sweeps live in MLflow: finding a sweep (its experiment and parent run), its trials'
runs (the latest attempt at each), a trial by name or id, its log and the tables it logged.
Artifact names are constants in `tracking`."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..compat.mlflow_internals import child_runs
from ..spec.schema import DEFAULT_METRIC
from . import tracking


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

    def ranked_by(self, metric: str | None) -> Sweep:
        """This sweep with its trials ranked by `metric` (in the sweep's mode); None: its own metric."""
        return self if metric is None else dataclasses.replace(self, metric=metric)

    @property
    def run(self) -> tracking.SweepRun:
        return tracking.SweepRun(self.uri, self.experiment_id, self.parent_run_id)

    def runs(self) -> list:
        """The latest attempt at each of its trials (MLflow runs)."""
        return tracking.latest_trial_runs(self.run)

    def runs_with(self, metrics=(), tags=(), params=()) -> list:
        """`runs()` holding only the named metrics, tags and params, read lighter where the store
        allows (a SQL store's tables: a large sweep's readers need a few fields of each run); else whole."""
        c = tracking.client(self.uri)
        light = child_runs(c, self.experiment_id, self.parent_run_id, metrics, (tracking.TAG_TRIAL_ID, *tags), params)
        return self.runs() if light is None else tracking.latest_attempts(light)


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
    return Sweep(
        uri, exp.name, exp.experiment_id, parent, axes, params.get("metric", DEFAULT_METRIC), params.get("mode", "max")
    )


def list_sweeps(uri: str) -> list[dict[str, Any]]:
    """Every sweep (parent run) in the store, newest first, with trial counts by status."""
    c = tracking.client(uri)
    rows = []
    for exp in c.search_experiments():
        for parent in c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.TAG_KIND}` = 'parent'"):
            children = tracking.latest_trial_runs(tracking.SweepRun(uri, exp.experiment_id, parent.info.run_id))
            counts = status_counts(children)
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


def trial_log(sweep: Sweep, trial: str) -> str:
    """A trial's full stdout/stderr: the MLflow artifact once it ended, the live file while it runs."""
    run = find_run(sweep, trial)
    c = tracking.client(sweep.uri)
    if any(a.path == tracking.TRIAL_LOG for a in c.list_artifacts(run.info.run_id)):
        with tempfile.TemporaryDirectory() as tmp:
            return Path(c.download_artifacts(run.info.run_id, tracking.TRIAL_LOG, tmp)).read_text(errors="replace")
    live = run.data.tags.get(tracking.TAG_LOG_PATH)
    if live and Path(live).exists():
        return Path(live).read_text(errors="replace")
    raise SweepNotFound(f"trial {run.info.run_name} has no log yet (status {run.info.status})")


def artifact_table(uri: str, run_id: str, path: str) -> pd.DataFrame:
    """A table a run logged with `MlflowClient.log_table` (samples, judged generations)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = json.loads(Path(tracking.client(uri).download_artifacts(run_id, path, tmp)).read_text())
    return pd.DataFrame(data["data"], columns=data["columns"])


def status_counts(runs) -> dict[str, int]:
    """{MLflow status: number of runs}."""
    return pd.Series([r.info.status for r in runs], dtype=object).value_counts().to_dict()


def find_run(sweep: Sweep, trial: str):
    """A trial's (latest) MLflow run: `trial` is a run name (e.g. `loss_type=ipo,beta=0.1`), a
    trial id, or a run id (or a prefix of one)."""
    runs = sweep.runs_with()  # names and ids: the run itself is read once found
    matches = [r for r in runs if trial in (r.info.run_name, r.data.tags.get(tracking.TAG_TRIAL_ID))]
    matches = matches or [
        r
        for r in runs
        if r.info.run_id.startswith(trial) or (r.data.tags.get(tracking.TAG_TRIAL_ID) or "").startswith(trial)
    ]
    if not matches:
        names = ", ".join(r.info.run_name for r in runs[:10]) or "none"
        names += f" and {len(runs) - 10} more (python -m sweep report {sweep.name})" if len(runs) > 10 else ""
        raise SweepNotFound(f"no trial {trial!r} in sweep {sweep.name}; trials: {names}")
    return tracking.client(sweep.uri).get_run(matches[-1].info.run_id)  # the latest attempt at that point
