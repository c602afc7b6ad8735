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
from pathlib import Path

import ray
from ray import tune

from .. import secrets
from ..errors import SpecError
from ..record import dataset_inputs, tracking
from ..runtime import cluster, startup
from ..spec.load import SweepSpec
from ..spec.points import point_id, point_of_config
from ..trial import harness, model
from ..trial.configs import ConfigCheck
from ..trial.mlflow_run import TrialContext
from ..trial.run import FINAL, run_trial
from . import preflight
from .live_view import LiveView
from .options import RunOptions
from .outcome import SweepOutcome, finish
from .paired_stopping import PairedStopping
from .trial_endings import RecordFailures, Unfinished, wait_for_store


def _tune_trial(config: dict, ctx: TrialContext) -> None:
    """Ray Tune entry point: the point comes in as `config`, metrics go out via tune.report."""
    if ctx.sealed is not None:  # the secrets written out in the spec, from the object store
        secrets.provide(ray.get(ctx.sealed))
    point = point_of_config(config, ctx.spec)
    checkpoint = tune.get_checkpoint()  # set where a paused (or interrupted) trial resumes
    try:
        with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as resume_from:
            run_trial(ctx, point, report=_report, resume_from=resume_from)
    except Exception as e:
        masked = secrets.without_secret_text(e)
        if masked is not e:
            raise masked from None
        raise


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


def run_sweep(spec: SweepSpec, options: RunOptions = RunOptions(), log=print) -> SweepOutcome:
    """Run every point of `spec` on Ray Tune, or resume the sweep of that name.

    Running the same spec again resumes it: finished trials are kept, interrupted ones run
    again from scratch, failed ones stay failed unless `options.retry_failed`. A changed spec
    under the same name is refused unless `options.fresh`, which starts a new parent run (the
    old one is kept). Ray is down before
    the reports are written: a Ray handle freed while a shutdown is in progress (the garbage
    collector's timing) ends the process.
    """
    t0 = time.time()
    results_dir = spec.results_path(spec.name)
    uri = tracking.resolve_tracking_uri(spec.tracking.uri, spec.results_dir)
    points = spec.points()
    n_trials = spec.num_trials()
    log(f"sweep {spec.name}: {n_trials} trials ({spec.search.method}), model {spec.model}, dataset {spec.dataset.path}")
    address, verbose = options.address, options.verbose
    if spec.harness.tasks:
        harness.check(spec.harness)  # lm-eval's task index: seconds, so only where the spec has tasks
    cluster.check_reachable(address)  # before anything starts: joining a dead address would wait forever
    configs = ConfigCheck(spec)  # every point's configs built aside while Ray starts
    # On a cluster, trials may have CUDA where the driver has none: `auto` may quantize there.
    quantized = model.quantizes(spec, cuda=bool(options.joins) or _cuda_here())
    cluster.start(address, verbose, quantized=quantized, warm_workers=cluster.trials_at_once(spec))
    if not options.joins:
        # A local Ray forks its processes from a thread of this one (started by `api.run` as
        # the driver imported its modules). Loading the data runs pyarrow's threads, which
        # create Python thread states; a fork at that moment leaves CPython 3.11's child
        # waiting forever on the lock they held (`PyOS_AfterFork_Child`): Ray first.
        cluster.ready(address, verbose)
    model_path, datasets = preflight.prepare(spec, points, log)
    if options.joins:
        cluster.ready(address, verbose)
        _check_store_reachable(uri)  # before the store is touched
    _check_resources_fit(spec)
    problem = configs.result(log)
    if problem:
        raise SpecError(*problem)
    sections = {"train": spec.train, "lora": spec.lora, "quantization": spec.quantization}
    for where in secrets.literal_credentials(sections):
        log(
            f"warning: {where}: a credential written in the spec (masked in every record); "
            "keep it out of the file with ${env:NAME} or ${file:PATH}"
        )
    record = _open_parent_run(spec, uri, options.fresh, log, datasets)
    # Tune pickles what trials are given into its folder: secrets written out travel apart, in memory.
    sealed: dict[str, str] = {}
    trial_spec, trial_uri = secrets.sealed_spec(_local_paths_absolute(spec), sealed), secrets.seal(uri, sealed, "uri")
    secrets.provide(sealed)  # this process records failures through the same URI
    ctx = TrialContext(
        spec=trial_spec,
        model_path=model_path,
        tracking_uri=trial_uri,
        sealed=ray.put(sealed) if sealed else None,
        experiment_id=record.experiment_id,
        parent_run_id=record.parent_run_id,
        trials_dir=str(results_dir / "trials"),
        cache_dir=str(spec.results_path("cache")),  # shared by every sweep under results_dir
        log_to_file=not verbose,
        import_paths=spec.import_paths(),
        datasets=datasets,
    )
    ended = results_dir / "ray" / f"{record.parent_run_id}.ended.json"  # Unfinished's record of the fit
    ended.unlink(missing_ok=True)
    tuner = _tuner(spec, ctx, results_dir / "ray", options, Unfinished(ended))

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
        cluster.stop()  # Ray's part is done: trials being stopped have tagged their own runs
        wait_for_store(ctx, log)  # failures Tune saw, recorded
        # Points Ray Tune had not finished (interrupted, or paused at a rung) resume on the next
        # run: their runs are KILLED as interrupted. A trial the scheduler stopped tags and ends
        # its own run; where Ray's shutdown cut that short, it is ended here as stopped early.
        unfinished, stopped_early = Unfinished.read(ended)
        interrupted = [point_id(point_of_config(config, spec)) for config in unfinished]
        stopped = [point_id(point_of_config(config, spec)) for config in stopped_early]
        tracking.end_stopped_early(record, stopped)
        killed = tracking.kill_unfinished(record, "sweep interrupted", interrupted)
        if killed:
            log(f"marked {killed} unfinished trial run(s) KILLED")
    outcome = finish(spec, record, results_dir, n_trials)
    log(
        f"sweep {spec.name} {outcome.status.lower()} in {time.time() - t0:.0f}s; summary: {results_dir / tracking.SUMMARY}"
    )
    if outcome.interrupted:
        done = int((outcome.summary["status"] == "FINISHED").sum()) if len(outcome.summary) else 0
        log(f"{n_trials - done} trial(s) not finished; run the same command again to resume")
    return outcome


def _open_parent_run(spec: SweepSpec, uri: str, fresh: bool, log, datasets: list[dict]) -> tracking.SweepRun:
    """The sweep's place in MLflow: the existing sweep's to resume it, or a new one, with the
    data it runs on as its dataset inputs."""
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
        record = tracking.SweepRun(uri, experiment_id, previous.info.run_id)
        # Runs a killed driver left RUNNING belong to no live process now.
        stale = tracking.kill_unfinished(record, "interrupted (driver stopped)")
        tracking.client(uri).update_run(record.parent_run_id, status="RUNNING")
        log(
            f"resuming sweep {spec.name} (parent run {record.parent_run_id}; {stale} interrupted trial run(s) marked KILLED)"
        )
    else:
        record = tracking.SweepRun(uri, experiment_id, tracking.start_parent_run(uri, experiment_id, spec))
        dataset_inputs.log(tracking.client(uri), record.parent_run_id, datasets)
    log(f"tracking: {secrets.mask_text(uri)} (experiment {experiment_id}, parent run {record.parent_run_id})")
    return record


def _local_paths_absolute(spec: SweepSpec) -> SweepSpec:
    """Trials run in folders of their own: a local dataset path given relative to the working
    directory is made absolute for them."""
    path = Path(spec.dataset.path).expanduser()
    if spec.dataset.path.startswith("builtin:") or path.is_absolute() or not path.exists():
        return spec
    return dataclasses.replace(spec, dataset=dataclasses.replace(spec.dataset, path=str(path.resolve())))


def _tuner(
    spec: SweepSpec, ctx: TrialContext, storage: Path, options: RunOptions, unfinished: Unfinished
) -> tune.Tuner:
    """A new Tuner for the sweep, or the interrupted one restored from its folder."""
    gpu = _trial_gpu(spec)
    ctx = dataclasses.replace(ctx, gpu=gpu)  # a trial given no GPU stays off them (model.uses_cuda)
    trainable = tune.with_resources(tune.with_parameters(_tune_trial, ctx=ctx), {"cpu": spec.resources.cpu, "gpu": gpu})
    # Ray's experiment folder is named after the parent run: one sweep, one folder.
    experiment_path = storage / ctx.parent_run_id
    if tune.Tuner.can_restore(str(experiment_path)):
        return tune.Tuner.restore(
            str(experiment_path),
            trainable,
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=options.retry_failed,
        )
    search_alg, scheduler = None, _scheduler(spec)
    if spec.search.method == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=spec.train.get("seed", 42))  # TPE; metric/mode from TuneConfig
    elif spec.scheduler.pauses:
        from ..compat.halving import PointsUntilLastRung

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
            verbose=1 if options.verbose else 0,
            callbacks=[
                LiveView(ctx.spec, interval=options.progress_interval),  # the spec without secrets: Tune pickles it
                unfinished,
                RecordFailures(ctx),
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
        from ..compat.halving import SuccessiveHalving

        n = spec.num_trials()
        return SuccessiveHalving(n, s.halving_rungs(n), s.grace_period, s.reduction_factor, FINAL)
    if s.type == "paired":
        return PairedStopping(s.level, s.grace_period)
    if s.type == "median":
        from ray.tune.schedulers import MedianStoppingRule

        return MedianStoppingRule(time_attr="training_iteration", grace_period=s.grace_period, min_samples_required=2)
    return None


def _cuda_here() -> bool:
    """Whether torch finds a GPU in this process; torch, which the driver needs for nothing else,
    is imported only where a device node says it might."""
    if not cluster.may_have_cuda():
        return False
    import torch

    return torch.cuda.is_available()


def _trial_gpu(spec: SweepSpec) -> float:
    """GPUs per trial: the spec's, else one where the cluster has GPUs."""
    if spec.resources.gpu is not None:
        return spec.resources.gpu
    return 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0


def _check_resources_fit(spec: SweepSpec) -> None:
    """A trial asking for more than any one node of the cluster has is refused: Ray would wait
    for it forever."""
    need = {"CPU": spec.resources.cpu, "GPU": _trial_gpu(spec)}
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(all(node.get(k, 0) >= v for k, v in need.items() if v) for node in nodes):
        return
    most = {k: max((node.get(k, 0) for node in nodes), default=0) for k in need}
    field = "resources.gpu" if need["GPU"] > most["GPU"] else "resources.cpu"
    raise SpecError(
        field,
        f"a trial asks for {need['CPU']:g} CPU(s) and {need['GPU']:g} GPU(s), but no node of this Ray cluster "
        f"has that many (the most on one node: {most['CPU']:g} CPUs, {most['GPU']:g} GPUs)",
    )


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
