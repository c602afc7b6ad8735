"""How a sweep's trials ended, kept where a resumed or re-run sweep reads it: the trials Ray Tune
left unfinished or stopped early (`Unfinished`), and the runs of trials Tune ended in error marked
FAILED with their cause (`RecordFailures`), also where the store was away when they failed."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ray import tune

from .. import secrets
from ..files import write_atomic
from ..record import tracking
from ..spec.points import point_id, point_of_config
from ..trial.mlflow_run import TrialContext
from .failures import error_line


class Unfinished(tune.Callback):
    """How the trials stood when `fit` returned, written to `path`: the configs of those Ray
    Tune had not finished (not started, paused, or stopped by the interruption itself: Tune's
    clean-up ends running trials as TERMINATED without `on_trial_complete`, so status alone
    cannot tell), and of those its scheduler stopped early. A file, not this object: a resumed
    sweep runs the unpickled copy of the first run's callback."""

    def __init__(self, path: Path):
        self.path = path
        self.ran, self.ended = set(), set()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.ran.add(trial.trial_id)

    on_trial_restore = on_trial_start

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended.add(trial.trial_id)

    on_trial_error = on_trial_complete

    def on_experiment_end(self, trials, **info):
        unfinished = [
            t.config
            for t in trials
            if t.status not in ("TERMINATED", "ERROR") or (t.trial_id in self.ran and t.trial_id not in self.ended)
        ]
        stopped = [  # ended by the scheduler: a finished trial reports train_runtime last
            t.config
            for t in trials
            if t.status == "TERMINATED" and t.trial_id in self.ended and "train_runtime" not in (t.last_result or {})
        ]
        write_atomic(self.path, json.dumps({"unfinished": unfinished, "stopped": stopped}, default=str))

    @staticmethod
    def read(path: Path) -> tuple[list, list]:
        """(unfinished, stopped) configs as the last `fit` left them; none where it wrote nothing
        (their runs are then marked KILLED as interrupted when the sweep is run again)."""
        ended = json.loads(path.read_text()) if path.exists() else {}
        return ended.get("unfinished", []), ended.get("stopped", [])


UNRECORDED = "failure.unrecorded"  # beside a trial's log: a failure cause the store could not take yet


class RecordFailures(tune.Callback):
    """A trial Ray Tune ends in error is FAILED in MLflow with its cause, whatever ended it.

    A Python exception is recorded by the trial itself: its run is FAILED before Tune hears
    of it. A worker process that died (the OOM killer, a signal, a segfault), a node that
    left, or a tracking store the trial could not reach never got that far: its run is still
    RUNNING when Tune reports the error (or the retry, with `max_failures`), and is ended
    FAILED here with the cause in one line; Ray's whole report goes to the end of the trial's
    log. A cause the store cannot take now waits in a file until `record_failures` can."""

    def __init__(self, ctx: TrialContext):
        self.ctx = ctx

    def on_trial_error(self, iteration, trials, trial, **info):
        folder = Path(self.ctx.trials_dir) / point_id(point_of_config(trial.config, self.ctx.spec))
        folder.mkdir(parents=True, exist_ok=True)
        error_file = getattr(trial, "error_file", None)
        if error_file and Path(error_file).exists():  # Ray's text, its advice on OOM kills included
            with open(folder / tracking.TRIAL_LOG, "a") as log:
                report = secrets.mask_text(Path(error_file).read_text(errors="replace"))
                log.write(f"\n[sweep] Ray's report of this failure:\n{report}\n")
        (folder / UNRECORDED).write_text(error_line(trial))
        record_failures(self.ctx)

    on_trial_recover = on_trial_error


def record_failures(ctx: TrialContext) -> list[str]:
    """End FAILED, with their cause, the runs of trials whose failure is not recorded yet;
    return the causes the store could not take (it is unreachable: they wait for a later try)."""
    left = []
    for pending in sorted(Path(ctx.trials_dir).glob(f"*/{UNRECORDED}")):
        cause = pending.read_text()
        try:
            run = tracking.running_trial_run(ctx.sweep_run(), pending.parent.name)
            if run is not None:
                tracking.end_run(ctx.store_uri(), run.info.run_id, "FAILED", cause)
        except Exception:
            left.append(cause)
            continue
        pending.unlink()
    return left


def wait_for_store(ctx: TrialContext, log) -> None:
    """Before the sweep's end is written: every failure recorded, the store waited for up to
    `tracking.retry_s` where it is away; still away, one line names it (exit 1)."""
    left, deadline, delay = record_failures(ctx), time.time() + ctx.spec.tracking.retry_s, 1.0
    if left:
        log(f"the tracking store is unreachable; waiting up to {ctx.spec.tracking.retry_s:g} s to record the sweep")
    while left and time.time() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 15.0)
        left = record_failures(ctx)
    if left:
        what = f"{len(left)} trial failure(s) could not be recorded; run the same command again once it is back"
        raise tracking.StoreUnreachable.of(ctx.store_uri(), what)
