"""What every trial is given (`TrialContext`), and a trial's MLflow run: opened (or
reopened, where a paused trial resumes), its metrics stored before a report a scheduler may
stop it at, and closed with its status, its log and what was dropped. A store that cannot take the opening or the closing after its client's
retries fails the trial with one line (`tracking.StoreUnreachable`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import secrets
from ..record import dataset_inputs, tracking
from ..spec.schema import SweepSpec


@dataclass
class TrialContext:
    """What every trial of a sweep shares; built once by the driver (or by hand)."""

    spec: SweepSpec
    model_path: str | None = None  # resolved `spec.model`; resolved in the trial if None
    tracking_uri: str | None = None  # None: no MLflow logging
    experiment_id: str | None = None
    parent_run_id: str | None = None
    trials_dir: str | None = None  # where each trial writes its resolved config and log
    cache_dir: str | None = None  # shared reference log-probs; absolute (Ray runs trials in their own cwd)
    log_to_file: bool = False  # send the trial's stdout/stderr to <trials_dir>/<trial_id>/trial.log
    import_paths: list[str] | None = None  # where `module:function` scorers are imported from (spec.import_paths())
    gpu: float | None = None  # the share of a GPU each trial holds, as Ray was asked; None: spec.resources.gpu
    sealed: Any = None  # Ray's ObjectRef of the secrets `secrets.seal` took out of `spec` and `tracking_uri`
    datasets: list[dict[str, str]] | None = None  # dataset_inputs.describe's splits, logged on each trial's run

    def store_uri(self) -> str | None:
        """The tracking URI with its credentials (`tracking_uri` may be a sealed reference)."""
        return secrets.resolve(self.tracking_uri)

    def sweep_run(self) -> tracking.SweepRun:
        """The sweep's place in MLflow, its URI's credentials resolved here."""
        return tracking.SweepRun(self.store_uri(), self.experiment_id, self.parent_run_id)


def stored_first(report, sender, spec):
    """`report`, sending the run's pending metrics first where a scheduler may stop (or pause)
    the trial at a report: its process then ends before the sender's next round."""
    if report is None or sender is None or spec.scheduler.type == "none":
        return report

    def report_after_flush(metrics, *checkpoint):
        sender.flush()
        report(metrics, *checkpoint)

    return report_after_flush


def open_run(ctx: TrialContext, family, args, point: dict, trial_id: str, resume_from, out_dir: Path) -> str:
    """The trial's MLflow run: the one it paused in (resuming from a checkpoint), else a new one."""
    spec = ctx.spec
    run_id = None
    if resume_from is not None:  # paused at a rung (or interrupted): the same run goes on
        run_id = tracking.reopen_trial_run(ctx.sweep_run(), trial_id)
    if run_id is None:
        fixed = {
            **{f"train.{k}": v for k, v in spec.train.items()},
            **{f"lora.{k}": v for k, v in spec.lora.items()},
        }
        fixed.update(model=spec.model, dataset=spec.dataset.path, quantization=spec.quantization.get("mode"))
        fixed["trial.family"] = family.name
        fixed["trial.max_steps"] = args.max_steps
        if hasattr(args, "beta"):  # every family's config has one; reports divide margins by it
            fixed[tracking.BETA] = args.beta
        fixed["trial.node"] = node_name()
        log_path = str(out_dir / tracking.TRIAL_LOG)
        run_id = tracking.start_trial_run(ctx.sweep_run(), spec, point, trial_id, fixed, log_path)
        tracking.client(ctx.store_uri()).log_artifact(run_id, str(out_dir / tracking.TRIAL_CONFIG))
        if ctx.datasets:
            dataset_inputs.log(tracking.client(ctx.store_uri()), run_id, ctx.datasets)
    return run_id


def close_run(ctx: TrialContext, run_id: str, sender, log_path: Path, status: str, reason, stopped_early) -> None:
    """Every metric point stored (or given up on), the log attached, the run ended with its
    status. A store that cannot take this after its client's retries fails the trial with one
    line (`tracking.StoreUnreachable`): a run that cannot be recorded did not finish."""
    log_to = log_path if ctx.log_to_file else None
    try:
        c = tracking.client(ctx.store_uri())
        sender.close()
        if sender.dropped:
            say(sender.summary(), log_to)
            c.set_tag(run_id, tracking.TAG_METRICS_DROPPED, str(sender.dropped))
        if log_path.exists():
            c.log_artifact(run_id, str(log_path))
        if stopped_early:  # KILLED with its last metrics, marked so reports rank it, not as interrupted
            c.set_tag(run_id, tracking.TAG_STOPPED_EARLY, "true")
        tracking.end_run(ctx.store_uri(), run_id, status, reason)
    except Exception as e:
        error = tracking.StoreUnreachable.of(ctx.store_uri(), "the trial's end was not recorded", e)
        say(str(error), log_to)
        if status != "KILLED":  # a stop (scheduler, Ctrl-C) in flight stays a stop
            raise error from e


def node_name() -> str:
    """Which machine (Ray node) runs this trial: shows where trials went on a cluster."""
    import socket

    try:
        import ray

        if ray.is_initialized():
            return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    except ImportError:
        pass
    return socket.gethostname()


def say(line: str, log_path: Path | None) -> None:
    """A line for the trial's log (its stderr where it has no log file)."""
    if log_path is None:
        print(line, file=sys.stderr, flush=True)
    else:
        with open(log_path, "a") as log:
            log.write(line + "\n")
