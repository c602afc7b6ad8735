"""The sweep driver: prepare once, hand every point to Ray Tune, summarise from MLflow.

Ray Tune does the scheduling (one trial per point, resources per trial, a concurrency
limit); MLflow holds the results. This module is the glue between them and the spec.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from . import cluster, model, startup, tracking
from .axes import resolved_section
from .points import point_id, point_of_config
from .progress import LiveView
from .spec import SpecError, SweepSpec
from .trial import TrialContext, run_trial


@dataclass
class SweepOutcome:
    sweep: Any  # store.Sweep: where the sweep lives in MLflow
    results_dir: Path
    summary: Any  # pandas.DataFrame, one row per trial (reports.trials_frame)
    n_failed: int
    interrupted: bool

    @property
    def status(self) -> str:
        """The parent run's final MLflow status."""
        return "KILLED" if self.interrupted else ("FAILED" if self.n_failed else "FINISHED")

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.n_failed else 0)


def _tune_trial(config: dict, ctx: TrialContext) -> None:
    """Ray Tune entry point: the point comes in as `config`, metrics go out via tune.report."""
    point = point_of_config(config, ctx.spec)
    checkpoint = tune.get_checkpoint()  # set where a paused (or interrupted) trial resumes
    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as resume_from:
        run_trial(ctx, point, report=_report, resume_from=resume_from)


def _report(metrics: dict, checkpoint_dir: str | None = None) -> None:
    """A trial's report to Ray Tune; a checkpoint's folder is copied into the sweep's Ray folder."""
    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)


def param_space(spec: SweepSpec) -> dict:
    """The spec's axes as Ray Tune's search space."""
    optuna = spec.search.method == "optuna"
    space: dict = {}
    for name, values in spec.axes.items():  # Optuna takes no grid_search: a list becomes a choice
        space[name] = tune.choice(values) if optuna else tune.grid_search(values)
    for group, fields in spec.zipped.items():
        space[group] = tune.grid_search([dict(zip(fields, vals)) for vals in zip(*fields.values())])
    for name, kind_args in spec.sampled.items():
        kind, args = next(iter(kind_args.items()))
        if kind == "choice":
            space[name] = tune.choice(args)
        elif kind == "randint":
            space[name] = tune.randint(args[0], args[1] + 1)  # Ray's upper bound is exclusive; ours is not
        else:
            space[name] = getattr(tune, kind)(*args)
    return space


def run_sweep(
    spec: SweepSpec,
    *,
    address: str | None = None,
    log=print,
    verbose: bool = False,
    progress_interval: float = 30.0,
    fresh: bool = False,
    retry_failed: bool = False,
    exits_after: bool = False,
) -> SweepOutcome:
    """Run every point of `spec` on Ray Tune, or resume the sweep of that name.

    Running the same spec again resumes it: finished trials are kept, interrupted ones run
    again from scratch, failed ones stay failed unless `retry_failed`. A changed spec under the
    same name is refused unless `fresh`, which starts a new parent run (the old one is kept).
    `verbose` lets Ray's and the trials' own output through to the console. `exits_after`:
    the caller exits right after (the CLI), so Ray may shut down while the reports are written;
    a process that goes on (a notebook) gets `run_sweep` back with Ray down, as Ray handles
    freed during a shutdown in progress end the process.
    """
    t0 = time.time()
    results_dir = spec.results_path(spec.name)
    uri = tracking.resolve_tracking_uri(spec.tracking.uri, spec.results_dir)
    points = spec.points()
    n_trials = spec.num_trials()
    log(f"sweep {spec.name}: {n_trials} trials ({spec.search.method}), model {spec.model}, dataset {spec.dataset.path}")
    # A local Ray comes up (and prestarts its workers) while the data is checked and the
    # store opens. On a cluster, trials may have CUDA where the driver has none: `auto` may
    # quantize there.
    import torch

    quantized = model.quantizes(spec, cuda=bool(cluster.address_of(address)) or torch.cuda.is_available())
    cluster.start(address, verbose, quantized=quantized, warm_workers=cluster.trials_at_once(spec))
    model_path = _prepare(spec, points, log)
    if cluster.address_of(address):
        cluster.ready(address, verbose)
        _check_store_reachable(uri)  # before the store is touched
    experiment_id, parent_run_id = _open_parent_run(spec, uri, fresh, log)
    ctx = TrialContext(
        spec=tracking.without_secrets(_local_paths_absolute(spec)),  # Tune pickles what trials get into its folder
        model_path=model_path,
        tracking_uri=uri,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        trials_dir=str(results_dir / "trials"),
        cache_dir=str(spec.results_path("cache")),  # shared by every sweep under results_dir
        log_to_file=not verbose,
        import_paths=spec.import_paths(),
    )
    cluster.ready(address, verbose)
    unfinished = _Unfinished()
    tuner = _tuner(spec, ctx, results_dir / "ray", verbose, progress_interval, retry_failed, unfinished)

    # SIGTERM (a cluster scheduler, `kill`) stops the sweep like Ctrl-C: Tune saves its state.
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    startup.resume()  # start-up is over: the collector back on, for a driver that may run for days
    try:
        with cluster.trials_on_prestarted_workers(address):
            tuner.fit()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        cluster.stop(background=exits_after)  # Ray's part is done
        # Points Ray Tune had not finished (interrupted, or paused at a rung) resume on the next
        # run: their runs are KILLED as interrupted, not left as stopped early by the scheduler.
        interrupted = [point_id(point_of_config(config, spec)) for config in _Unfinished.configs]
        if interrupted:
            cluster.stop()  # their workers gone first: a trial being stopped tags its own run
        killed = tracking.kill_unfinished(uri, experiment_id, parent_run_id, "sweep interrupted", interrupted)
        if killed:
            log(f"marked {killed} unfinished trial run(s) KILLED")
    outcome = _finish(spec, uri, parent_run_id, results_dir, n_trials)
    log(
        f"sweep {spec.name} {outcome.status.lower()} in {time.time() - t0:.0f}s; summary: {results_dir / tracking.SUMMARY}"
    )
    if outcome.interrupted:
        done = int((outcome.summary["status"] == "FINISHED").sum()) if len(outcome.summary) else 0
        log(f"{n_trials - done} trial(s) not finished; run the same command again to resume")
    return outcome


def _prepare(spec: SweepSpec, points: list[dict], log) -> str:
    """Once per sweep, in the driver, before any trial: bad data fails here (SpecError, exit 2)
    before anything is written, and no two trials race to build the builtin model."""
    from .data import check_lengths, load_preference_data
    from .model import load_tokenizer, resolve_model_path

    data = load_preference_data(spec.dataset, log=log, keep_columns=bool(spec.judge.prompts))
    log(f"data: {len(data['train'])} train / {len(data['eval'])} eval pairs")
    if spec.judge.prompts:
        _check_judge(spec, data["eval"], log)
    model_path = resolve_model_path(spec.model, log=log)
    tokenizer = load_tokenizer(model_path)
    if isinstance(data["train"][0]["prompt"], list) and not tokenizer.chat_template:
        raise SpecError(
            "dataset.chat_template",
            f"{spec.model}'s tokenizer has no chat template to format "
            "conversational rows; set dataset.chat_template: false to train on raw text",
        )
    max_lengths = [resolved_section(spec, "train", p).get("max_length", 1024) for p in points]
    check_lengths(data, tokenizer, min((m for m in max_lengths if m), default=None), log=log)
    return model_path


def _check_judge(spec: SweepSpec, held_out, log) -> None:
    """The scorers, called on the first held-out rows: one that fails is a spec error, before
    anything trains."""
    from . import judge, scorers

    rows = judge.held_out_rows(spec, held_out)
    if len(rows) < spec.judge.prompts:
        log(
            f"warning: judge.prompts is {spec.judge.prompts} but the eval split has {len(rows)} rows; judging {len(rows)}"
        )
    try:
        scorers.probe(spec.judge.scorers, rows, spec.import_paths())
    except scorers.ScorerError as e:
        raise SpecError(e.where, str(e)) from None


def _open_parent_run(spec: SweepSpec, uri: str, fresh: bool, log) -> tuple[str, str]:
    """(experiment id, parent run id): the existing sweep's to resume it, or a new one."""
    experiment_name = spec.tracking.experiment or spec.name
    previous = None if fresh else tracking.latest_parent_run(uri, experiment_name)
    if previous is not None and previous.data.tags.get(tracking.TAG_FINGERPRINT) != spec.fingerprint():
        raise SpecError(
            "spec",
            f"sweep {spec.name!r} already exists in {uri} with a different spec; "
            "run with --fresh to start a new sweep under a new parent run (the old one is kept), or rename it",
        )
    spec.results_path(spec.name).mkdir(parents=True, exist_ok=True)
    experiment_id = tracking.ensure_experiment(uri, experiment_name, spec.results_path("mlartifacts"))
    if previous is not None:
        parent_run_id = previous.info.run_id
        # Runs a killed driver left RUNNING belong to no live process now.
        stale = tracking.kill_unfinished(uri, experiment_id, parent_run_id, "interrupted (driver stopped)")
        tracking.client(uri).update_run(parent_run_id, status="RUNNING")
        log(f"resuming sweep {spec.name} (parent run {parent_run_id}; {stale} interrupted trial run(s) marked KILLED)")
    else:
        parent_run_id = tracking.start_parent_run(uri, experiment_id, spec)
    log(f"tracking: {uri} (experiment {experiment_id}, parent run {parent_run_id})")
    return experiment_id, parent_run_id


def _local_paths_absolute(spec: SweepSpec) -> SweepSpec:
    """Trials run in folders of their own: a local dataset path given relative to the working
    directory is made absolute for them."""
    path = Path(spec.dataset.path).expanduser()
    if spec.dataset.path.startswith("builtin:") or path.is_absolute() or not path.exists():
        return spec
    return dataclasses.replace(spec, dataset=dataclasses.replace(spec.dataset, path=str(path.resolve())))


class _Unfinished(tune.Callback):
    """The configs of the trials Ray Tune had not finished when `fit` returned: not started,
    paused, or stopped by the interruption itself (Tune's clean-up ends running trials as
    TERMINATED without `on_trial_complete`, so status alone cannot tell). Kept on the class:
    a resumed sweep runs the unpickled copy of the first run's callback."""

    configs: list = []

    def __init__(self):
        self.ran, self.ended = set(), set()
        _Unfinished.configs = []

    def on_trial_start(self, iteration, trials, trial, **info):
        self.ran.add(trial.trial_id)

    on_trial_restore = on_trial_start

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended.add(trial.trial_id)

    on_trial_error = on_trial_complete

    def on_experiment_end(self, trials, **info):
        _Unfinished.configs = [
            t.config
            for t in trials
            if t.status not in ("TERMINATED", "ERROR") or (t.trial_id in self.ran and t.trial_id not in self.ended)
        ]


class _RecordFailures(tune.Callback):
    """A trial Ray Tune ends in error is FAILED in MLflow with its cause, whatever ended it.

    A Python exception is recorded by the trial itself: its run is FAILED before Tune hears
    of it. A worker process that died (the OOM killer, a signal, a segfault) or a node that
    left never got that far: its run is still RUNNING when Tune reports the error (or the
    retry, with `max_failures`), and is ended FAILED here with Ray's cause in one line."""

    def __init__(self, ctx: TrialContext):
        self.spec, self.uri = ctx.spec, ctx.tracking_uri
        self.experiment_id, self.parent_run_id = ctx.experiment_id, ctx.parent_run_id

    def on_trial_error(self, iteration, trials, trial, **info):
        from .progress import error_line

        trial_id = point_id(point_of_config(trial.config, self.spec))
        run = tracking.running_trial_run(self.uri, self.experiment_id, self.parent_run_id, trial_id)
        if run is not None:
            tracking.end_run(self.uri, run.info.run_id, "FAILED", error_line(trial))

    on_trial_recover = on_trial_error


def _tuner(
    spec: SweepSpec,
    ctx: TrialContext,
    storage: Path,
    verbose: bool,
    progress_interval: float,
    retry_failed: bool,
    unfinished: _Unfinished,
) -> tune.Tuner:
    """A new Tuner for the sweep, or the interrupted one restored from its folder."""
    gpu = spec.resources.gpu
    if gpu is None:  # one GPU per trial where the cluster has GPUs
        gpu = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    trainable = tune.with_resources(tune.with_parameters(_tune_trial, ctx=ctx), {"cpu": spec.resources.cpu, "gpu": gpu})
    # Ray's experiment folder is named after the parent run: one sweep, one folder.
    experiment_path = storage / ctx.parent_run_id
    if tune.Tuner.can_restore(str(experiment_path)):
        return tune.Tuner.restore(
            str(experiment_path), trainable, resume_unfinished=True, resume_errored=False, restart_errored=retry_failed
        )
    search_alg, scheduler = None, _scheduler(spec)
    if spec.search.method == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=spec.train.get("seed", 42))  # TPE; metric/mode from TuneConfig
    elif spec.scheduler.pauses:
        from .compat.halving import PointsUntilLastRung

        search_alg = PointsUntilLastRung()  # keeps paused trials' workers for their resumption
    return tune.Tuner(
        trainable,
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=spec.sample_count(),
            max_concurrent_trials=spec.max_concurrent_trials,
            # A reused worker keeps torch/transformers/TRL imported between trials.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=ctx.parent_run_id,
            storage_path=str(storage),
            verbose=1 if verbose else 0,
            callbacks=[
                LiveView(ctx.spec, interval=progress_interval),  # the spec without secrets: Tune pickles it
                unfinished,
                _RecordFailures(ctx),
            ],
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # the latest is what a trial resumes from
        ),
    )


def _scheduler(spec: SweepSpec):
    """Ray Tune's early-stopping scheduler for the spec; time is counted in evaluations (each
    trial reports its held-out metrics at every eval)."""
    s = spec.scheduler
    if s.type == "asha":
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(
            time_attr="training_iteration", grace_period=s.grace_period, reduction_factor=s.reduction_factor
        )
    if s.type == "halving":
        from .compat.halving import SuccessiveHalving

        return SuccessiveHalving(spec.num_trials(), s)
    if s.type == "median":
        from ray.tune.schedulers import MedianStoppingRule

        return MedianStoppingRule(time_attr="training_iteration", grace_period=s.grace_period, min_samples_required=2)
    return None


def _finish(spec: SweepSpec, uri: str, parent_run_id: str, results_dir: Path, n_points: int) -> SweepOutcome:
    """Summary CSV and plots (on disk and on the parent run), adapters to keep, parent status."""
    from . import reports, store
    from .plots import write_plots

    sweep = store.sweep_from_run(uri, parent_run_id)
    summary = reports.trials_frame(sweep, all_metrics=True)
    n_failed = int((summary["status"] == "FAILED").sum()) if len(summary) else 0
    interrupted = len(summary) < n_points or bool((summary["status"] == "KILLED").any())  # not STOPPED_EARLY
    summary.to_csv(results_dir / tracking.SUMMARY, index=False)
    c = tracking.client(uri)
    c.log_artifact(parent_run_id, str(results_dir / tracking.SUMMARY))
    if len(summary):
        history = reports.history_frame(sweep, metrics=list(reports.CURVES))
        for path in write_plots(summary, history, spec.metric, results_dir / "plots", spec.name):
            c.log_artifact(parent_run_id, str(path), artifact_path="plots")
    if spec.save == "best":
        _keep_best_adapter(summary, results_dir / "trials", c)
    outcome = SweepOutcome(sweep, results_dir, summary, n_failed, interrupted)
    c.set_terminated(parent_run_id, status=outcome.status)
    return outcome


def _keep_best_adapter(summary, trials_dir: Path, client) -> None:
    """`save: best`: every trial saved its adapter; keep only the best finished trial's, on disk
    and as its MLflow run's `adapter/` artifact, so disk use stays bounded by one adapter."""
    import shutil

    done = summary[summary["status"] == "FINISHED"]  # ranked, best first
    best = done.iloc[0] if len(done) else None
    for adapter in trials_dir.glob("*/adapter"):
        if best is not None and adapter.parent.name == best["trial_id"]:
            client.log_artifacts(best["run_id"], str(adapter), tracking.ADAPTER)
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
