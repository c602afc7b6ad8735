"""The sweep driver: prepare once, hand every point to Ray Tune, summarise from MLflow.

Ray Tune does the scheduling (one trial per point, resources per trial, a concurrency
limit); MLflow holds the results. This module is the glue between them and the spec.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from . import tracking
from .progress import LiveView
from .spec import SweepSpec
from .trial import TrialContext, run_trial


@dataclass
class SweepOutcome:
    sweep: Any  # reports.Sweep: where the sweep lives in MLflow
    results_dir: Path
    summary: Any  # pandas.DataFrame, one row per trial (reports.trials_frame)
    n_failed: int
    interrupted: bool

    @property
    def exit_code(self) -> int:
        return 1 if (self.n_failed or self.interrupted) else 0


def _tune_trial(config: dict, ctx: TrialContext) -> None:
    """Ray Tune entry point: the point comes in as `config`, metrics go out via tune.report."""
    point = {name: config[name] for name in ctx.spec.axes}  # the spec's axis order
    run_trial(ctx, point, report=tune.report)


def run_sweep(
    spec: SweepSpec, *, address: str | None = None, log=print, verbose: bool = False, progress_interval: float = 30.0
) -> SweepOutcome:
    """Run every point of `spec` on Ray Tune; `verbose` lets Ray's and the trials' output through."""
    results_dir = Path(spec.results_dir).resolve() / spec.name
    uri = tracking.resolve_tracking_uri(spec.tracking.uri, spec.results_dir)
    points = spec.points()
    log(f"sweep {spec.name}: {len(points)} trials, model {spec.model}, dataset {spec.dataset.path}")

    # Prepare once, in the driver, before any trial starts: bad data fails here (SpecError,
    # exit 2) before anything is written, and no two trials race to build the model.
    from .data import load_preference_data
    from .model import resolve_model_path

    t0 = time.time()
    data = load_preference_data(spec.dataset)
    log(f"data: {len(data['train'])} train / {len(data['eval'])} eval pairs")
    model_path = resolve_model_path(spec.model, log=log)
    results_dir.mkdir(parents=True, exist_ok=True)
    experiment_id = tracking.ensure_experiment(uri, spec.tracking.experiment or spec.name, Path(spec.results_dir).resolve() / "mlartifacts")
    parent_run_id = tracking.start_parent_run(uri, experiment_id, spec, Path(spec.source) if spec.source else None)
    log(f"tracking: {uri} (experiment {experiment_id}, parent run {parent_run_id})")

    ctx = TrialContext(
        spec=spec,
        model_path=model_path,
        tracking_uri=uri,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        trials_dir=str(results_dir / "trials"),
        log_to_file=not verbose,
    )
    _init_ray(address, verbose)
    gpu = spec.resources.gpu
    if gpu is None:  # one GPU per trial where the cluster has GPUs
        gpu = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    trainable = tune.with_resources(tune.with_parameters(_tune_trial, ctx=ctx), {"cpu": spec.resources.cpu, "gpu": gpu})
    tuner = tune.Tuner(
        trainable,
        param_space={name: tune.grid_search(values) for name, values in spec.axes.items()},
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            max_concurrent_trials=spec.max_concurrent_trials,
            # A reused worker keeps torch/transformers/TRL imported between trials.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str(results_dir / "ray"),
            verbose=1 if verbose else 0,
            callbacks=[LiveView(len(points), spec.metric, spec.mode, interval=progress_interval)],
        ),
    )
    interrupted = False
    try:
        tuner.fit()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        killed = tracking.kill_unfinished(uri, experiment_id, parent_run_id, "sweep interrupted")
        if killed:
            log(f"marked {killed} unfinished trial run(s) KILLED")
            interrupted = True

    from . import reports
    from .plots import write_plots

    sweep = reports.sweep_from_run(uri, parent_run_id)
    summary = reports.trials_frame(sweep, all_metrics=True)
    n_failed = int((summary["status"] != "FINISHED").sum()) if len(summary) else 0
    summary.to_csv(results_dir / "summary.csv", index=False)
    c = tracking.client(uri)
    c.log_artifact(parent_run_id, str(results_dir / "summary.csv"))
    if len(summary):
        history = reports.history_frame(sweep, metrics=list(reports.CURVES))
        for path in write_plots(summary, history, spec.metric, results_dir / "plots", spec.name):
            c.log_artifact(parent_run_id, str(path), artifact_path="plots")
    status = "KILLED" if interrupted else ("FAILED" if n_failed else "FINISHED")
    c.set_terminated(parent_run_id, status=status)
    log(f"sweep {spec.name} {status.lower()} in {time.time() - t0:.0f}s; summary: {results_dir / 'summary.csv'}")
    return SweepOutcome(sweep, results_dir, summary, n_failed, interrupted)


def _init_ray(address: str | None, verbose: bool) -> None:
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    env = {"env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0"), "TOKENIZERS_PARALLELISM": "false"}}
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=verbose)
    else:
        ray.init(include_dashboard=False, runtime_env=env, log_to_driver=verbose, configure_logging=verbose)
