"""The sweep driver: prepare once, hand every point to Ray Tune, summarise from MLflow.

Ray Tune does the scheduling (one trial per point, resources per trial, a concurrency
limit); MLflow holds the results. This module is the glue between them and the spec.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from . import tracking
from .progress import LiveView
from .spec import SpecError, SweepSpec, resolved_section
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
        return 130 if self.interrupted else (1 if self.n_failed else 0)


def _tune_trial(config: dict, ctx: TrialContext) -> None:
    """Ray Tune entry point: the point comes in as `config`, metrics go out via tune.report."""
    point = {name: config[name] for name in ctx.spec.axes}  # the spec's axis order
    run_trial(ctx, point, report=tune.report)


def run_sweep(
    spec: SweepSpec,
    *,
    address: str | None = None,
    log=print,
    verbose: bool = False,
    progress_interval: float = 30.0,
    fresh: bool = False,
    retry_failed: bool = False,
) -> SweepOutcome:
    """Run every point of `spec` on Ray Tune, or resume the sweep of that name.

    Running the same spec again resumes it: finished trials are kept, interrupted ones run
    again from scratch, failed ones stay failed unless `retry_failed`. A changed spec under the
    same name is refused unless `fresh`, which starts a new parent run (the old one is kept).
    `verbose` lets Ray's and the trials' own output through to the console.
    """
    results_dir = Path(spec.results_dir).resolve() / spec.name
    uri = tracking.resolve_tracking_uri(spec.tracking.uri, spec.results_dir)
    points = spec.points()
    log(f"sweep {spec.name}: {len(points)} trials, model {spec.model}, dataset {spec.dataset.path}")

    # Prepare once, in the driver, before any trial starts: bad data fails here (SpecError,
    # exit 2) before anything is written, and no two trials race to build the model.
    from .data import check_lengths, load_preference_data
    from .model import load_tokenizer, resolve_model_path

    t0 = time.time()
    data = load_preference_data(spec.dataset)
    log(f"data: {len(data['train'])} train / {len(data['eval'])} eval pairs")
    model_path = resolve_model_path(spec.model, log=log)
    max_lengths = [resolved_section(spec, "train", p).get("max_length", 1024) for p in points]
    check_lengths(data, load_tokenizer(model_path), min((m for m in max_lengths if m), default=None), log=log)

    _init_ray(address, verbose)
    _check_store_reachable(uri)  # before the store is touched
    experiment_name = spec.tracking.experiment or spec.name
    previous = None if fresh else tracking.latest_parent_run(uri, experiment_name)
    if previous is not None and previous.data.tags.get(tracking.TAG_FINGERPRINT) != spec.fingerprint():
        raise SpecError(
            "spec",
            f"sweep {spec.name!r} already exists in {uri} with a different spec; "
            "run with --fresh to start a new sweep under a new parent run (the old one is kept), or rename it",
        )
    results_dir.mkdir(parents=True, exist_ok=True)
    experiment_id = tracking.ensure_experiment(uri, experiment_name, Path(spec.results_dir).resolve() / "mlartifacts")
    if previous is not None:
        parent_run_id = previous.info.run_id
        # Runs a killed driver left RUNNING belong to no live process now.
        stale = tracking.kill_unfinished(uri, experiment_id, parent_run_id, "interrupted (driver stopped)")
        tracking.client(uri).update_run(parent_run_id, status="RUNNING")
        log(f"resuming sweep {spec.name} (parent run {parent_run_id}; {stale} interrupted trial run(s) marked KILLED)")
    else:
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
    gpu = spec.resources.gpu
    if gpu is None:  # one GPU per trial where the cluster has GPUs
        gpu = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    trainable = tune.with_resources(tune.with_parameters(_tune_trial, ctx=ctx), {"cpu": spec.resources.cpu, "gpu": gpu})
    # Ray's experiment folder is named after the parent run: one sweep attempt, one folder.
    experiment_path = results_dir / "ray" / parent_run_id
    if tune.Tuner.can_restore(str(experiment_path)):
        tuner = tune.Tuner.restore(
            str(experiment_path), trainable, resume_unfinished=True, resume_errored=False, restart_errored=retry_failed
        )
    else:
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
                name=parent_run_id,
                storage_path=str(results_dir / "ray"),
                verbose=1 if verbose else 0,
                callbacks=[LiveView(len(points), spec.metric, spec.mode, interval=progress_interval)],
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            ),
        )
    # SIGTERM (a cluster scheduler, `kill`) stops the sweep like Ctrl-C: Tune saves its state.
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        tuner.fit()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        killed = tracking.kill_unfinished(uri, experiment_id, parent_run_id, "sweep interrupted")
        if killed:
            log(f"marked {killed} unfinished trial run(s) KILLED")

    from . import reports
    from .plots import write_plots

    sweep = reports.sweep_from_run(uri, parent_run_id)
    summary = reports.trials_frame(sweep, all_metrics=True)
    n_done = len(summary)
    n_failed = int((summary["status"] == "FAILED").sum()) if n_done else 0
    interrupted = n_done < len(points) or bool((summary["status"] == "KILLED").any())
    summary.to_csv(results_dir / "summary.csv", index=False)
    c = tracking.client(uri)
    c.log_artifact(parent_run_id, str(results_dir / "summary.csv"))
    if n_done:
        history = reports.history_frame(sweep, metrics=list(reports.CURVES))
        for path in write_plots(summary, history, spec.metric, results_dir / "plots", spec.name):
            c.log_artifact(parent_run_id, str(path), artifact_path="plots")
    if spec.save == "best":
        _keep_best_adapter(summary, results_dir / "trials", c)
    status = "KILLED" if interrupted else ("FAILED" if n_failed else "FINISHED")
    c.set_terminated(parent_run_id, status=status)
    log(f"sweep {spec.name} {status.lower()} in {time.time() - t0:.0f}s; summary: {results_dir / 'summary.csv'}")
    if interrupted:
        log(f"{len(points) - int((summary['status'] == 'FINISHED').sum()) if n_done else len(points)} trial(s) not finished; "
            f"run the same command again to resume")
    return SweepOutcome(sweep, results_dir, summary, n_failed, interrupted)


def _keep_best_adapter(summary, trials_dir: Path, client) -> None:
    """`save: best`: every trial saved its adapter; keep only the best finished trial's, on disk
    and as its MLflow run's `adapter/` artifact, so disk use stays bounded by one adapter."""
    import shutil

    done = summary[summary["status"] == "FINISHED"]  # ranked, best first
    best = done.iloc[0] if len(done) else None
    for adapter in trials_dir.glob("*/adapter"):
        if best is not None and adapter.parent.name == best["trial_id"]:
            client.log_artifacts(best["run_id"], str(adapter), "adapter")
        else:
            shutil.rmtree(adapter, ignore_errors=True)


def _check_store_reachable(uri: str) -> None:
    """On a multi-node Ray cluster, trials on other nodes cannot write to this node's sqlite file."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1 and uri.startswith("sqlite:"):
        raise SpecError(
            "tracking.uri",
            f"this Ray cluster has {len(nodes)} nodes, and trials on the others cannot write to the node-local "
            f"store {uri}; start `python -m sweep server --host 0.0.0.0` and set tracking.uri (or "
            "MLFLOW_TRACKING_URI) to its http:// address",
        )


def _init_ray(address: str | None, verbose: bool) -> None:
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    env = {"env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0"), "TOKENIZERS_PARALLELISM": "false"}}
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=verbose)
    else:
        ray.init(include_dashboard=False, runtime_env=env, log_to_driver=verbose, configure_logging=verbose)
