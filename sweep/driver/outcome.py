"""What a finished (or interrupted) sweep leaves behind: the summary CSV and plots, on disk
and on the parent run; under `save: best` the one adapter kept; the parent run's status; and
the `SweepOutcome` handed back to the CLI and to `sweep.run`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..record import dataset_inputs, logged_models, tracking
from ..spec.load import SweepSpec


@dataclass
class SweepOutcome:
    sweep: Any  # store.Sweep: where the sweep lives in MLflow
    results_dir: Path
    summary: Any  # pandas.DataFrame, one row per trial (tables.trials_frame)
    n_failed: int
    interrupted: bool

    @property
    def status(self) -> str:
        """The parent run's final MLflow status."""
        return "KILLED" if self.interrupted else ("FAILED" if self.n_failed else "FINISHED")

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.n_failed else 0)


def finish(spec: SweepSpec, record: tracking.SweepRun, results_dir: Path, n_points: int) -> SweepOutcome:
    """Summary CSV and plots (on disk and on the parent run), adapters to keep, parent status."""
    from ..record import store
    from ..reports import tables
    from ..reports.plots import sweep_figures
    from ..reports.statistics import objectives_for

    uri, parent_run_id = record.uri, record.parent_run_id
    sweep = store.sweep_from_run(uri, parent_run_id)
    summary = tables.trials_frame(sweep, all_metrics=True)
    n_failed = int((summary["status"] == "FAILED").sum()) if len(summary) else 0
    interrupted = len(summary) < n_points or bool((summary["status"] == "KILLED").any())  # not STOPPED_EARLY
    summary.to_csv(results_dir / tracking.SUMMARY, index=False)
    c = tracking.client(uri)
    c.log_artifact(parent_run_id, str(results_dir / tracking.SUMMARY))
    if len(summary):
        objectives = objectives_for(summary, spec.metric, spec.mode)
        for path in sweep_figures(sweep, summary, spec.metric, results_dir / "plots", spec.name, objectives=objectives):
            c.log_artifact(parent_run_id, str(path), artifact_path="plots")
    if spec.save == "best":
        keep_best_adapter(summary, results_dir / "trials", c)
    if spec.save != "none":  # the Models tab shows each adapter with the metrics it was ranked by
        models = logged_models.sweep_models(c, sweep.experiment_id, parent_run_id)
        ranked_by = [k for k in summary.columns if k.startswith("eval_")]
        logged_models.link_metrics(c, models, ranked_by, dataset_inputs.evaluation_split(sweep.parent))
    c.set_tag(parent_run_id, tracking.TAG_NOTE, tracking.sweep_description(spec, _winner(summary, spec, n_points)))
    outcome = SweepOutcome(sweep, results_dir, summary, n_failed, interrupted)
    c.set_terminated(parent_run_id, status=outcome.status)
    return outcome


def _winner(summary, spec: SweepSpec, n_points: int) -> str:
    """One line for the parent run's description: the best finished trial and how many finished."""
    done = summary[summary["status"] == "FINISHED"] if len(summary) else summary
    if not len(done) or spec.metric not in done or done[spec.metric].isna().all():
        return f"No trial has finished with `{spec.metric}` yet ({len(done)} of {n_points} finished)."
    best = done.iloc[0]  # ranked, best first
    return (
        f"**Best: {best['trial']}**, `{spec.metric}` = {best[spec.metric]:.4g}; "
        f"{len(done)} of {n_points} trials finished (`python -m sweep report {spec.name}`)."
    )


def keep_best_adapter(summary, trials_dir: Path, client) -> None:
    """`save: best`: every trial saved its adapter; keep only the best finished trial's, on disk
    and as a logged model of its run, so disk use stays bounded by one adapter."""
    import shutil

    done = summary[summary["status"] == "FINISHED"]  # ranked, best first
    best = done.iloc[0] if len(done) else None
    for adapter in trials_dir.glob("*/adapter"):
        if best is not None and adapter.parent.name == best["trial_id"]:
            run = client.get_run(best["run_id"])
            logged_models.log_adapter(client, run, adapter, int(run.data.metrics.get("global_step", 0)))
        else:
            shutil.rmtree(adapter, ignore_errors=True)
