"""The live view of a running sweep: counts, best so far, elapsed time and an ETA.

On a terminal it is a rich progress bar; anywhere else (CI, `nohup`, a cluster job log)
it is a plain line every `interval` seconds, with no escape codes. Either way a line is
printed whenever a trial finishes or fails, with its metric or its reason.
"""

from __future__ import annotations

import math
import sys
import time

from ray import tune
from ray.tune.experiment import Trial

from ..reports.status import fmt_duration
from ..spec.points import point_label, point_of_config
from .failures import error_line


class LiveView(tune.Callback):
    def __init__(self, spec, *, interval: float = 30.0, stream=None, tty: bool | None = None):
        self.spec = spec
        self.total, self.metric, self.mode, self.interval = spec.num_trials(), spec.metric, spec.mode, interval
        self.stream = stream or sys.stdout
        self._tty_arg = tty
        self.tty = self.stream.isatty() if tty is None else tty
        self.t0 = time.time()
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.finished, self.failed, self.stopped = set(), set(), set()
        self.best: tuple[float, str] | None = None
        self.max_running = 1
        self._last_line = 0.0
        self._progress = None

    def _label(self, trial) -> str:
        return point_label(point_of_config(trial.config, self.spec))

    # ---- Ray Tune hooks ------------------------------------------------------------------
    def setup(self, **info):
        # Also runs when a restored sweep brings this (pickled) callback back in a new process.
        self.t0 = time.time()
        self.tty = self.stream.isatty() if self._tty_arg is None else self._tty_arg

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.time()

    def on_trial_complete(self, iteration, trials, trial, **info):
        done = self._classify(trial)
        took = self._ended(trial)
        value = (trial.last_result or {}).get(self.metric)
        shown = f"{value:.4g}" if isinstance(value, (int, float)) else "n/a"
        word = "finished" if done else "stopped early"
        self._event(f"{word} {self._label(trial)}: {self.metric}={shown} ({fmt_duration(took)})")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.failed.add(trial.trial_id)
        self._ended(trial)
        self._event(f"FAILED {self._label(trial)}: {error_line(trial)}")

    def on_trial_recover(self, iteration, trials, trial, **info):  # failed; max_failures lets Tune retry it
        self._event(f"FAILED {self._label(trial)}, retrying: {error_line(trial)}")

    def _classify(self, trial) -> bool:
        """Count a completed trial once (also trials a resumed sweep finished earlier)."""
        result = trial.last_result or {}
        done = "train_runtime" in result  # a trial stopped early by a scheduler never got there
        (self.finished if done else self.stopped).add(trial.trial_id)
        value = result.get(self.metric)
        if isinstance(value, (int, float)):
            better = self.best is None or (value > self.best[0] if self.mode == "max" else value < self.best[0])
            if better:
                self.best = (value, self._label(trial))
        return done

    def on_step_end(self, iteration, trials, **info):
        for t in trials:
            known = t.trial_id in self.finished | self.stopped | self.failed
            if not known and t.status == Trial.TERMINATED:
                self._classify(t)
            elif not known and t.status == Trial.ERROR:
                self.failed.add(t.trial_id)
        running = sum(t.status == Trial.RUNNING for t in trials)
        self.max_running = max(self.max_running, running)
        now = time.time()
        if self.tty:
            if now - self._last_line >= 0.5:
                self._last_line = now
                self._render_bar(trials)
        elif now - self._last_line >= self.interval:
            self._last_line = now
            self._write(self.status_line(trials))

    def on_experiment_end(self, trials, **info):
        if self._progress is not None:
            self._render_bar(trials)
            self._progress.stop()
            self._progress = None
        else:
            self._write(self.status_line(trials))

    # ---- text ------------------------------------------------------------------------------
    @property
    def n_done(self) -> int:
        """Trials that ended: finished, failed or stopped early."""
        return len(self.finished) + len(self.failed) + len(self.stopped)

    def counts(self, trials) -> dict[str, int]:
        running = sum(t.status == Trial.RUNNING for t in trials)
        return {
            "finished": len(self.finished),
            "running": running,
            "pending": max(0, self.total - self.n_done - running),
            "failed": len(self.failed),
            "stopped early": len(self.stopped),
        }

    def eta(self, trials) -> float:
        c = self.counts(trials)
        left = c["running"] + c["pending"]
        if not left:
            return 0.0
        if not self.durations:
            return math.inf
        mean = sum(self.durations) / len(self.durations)
        return mean * math.ceil(left / max(1, self.max_running))

    def status_line(self, trials) -> str:
        c = self.counts(trials)
        parts = [f"{c['finished']}/{self.total} finished"] + [f"{v} {k}" for k, v in c.items() if k != "finished"]
        line = f"[{fmt_duration(time.time() - self.t0)}] " + ", ".join(parts)
        if self.best:
            line += f" | best {self.metric}={self.best[0]:.4g} ({self.best[1]})"
        return line + f" | ETA {fmt_duration(self.eta(trials))}"

    # ---- output ----------------------------------------------------------------------------
    def _event(self, text: str) -> None:
        line = f"[{self.n_done}/{self.total}] {text}"
        if self._progress is not None:
            self._progress.console.print(line, highlight=False, markup=False)
        else:
            self._write(line)

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def _render_bar(self, trials) -> None:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]trials"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                console=Console(file=self.stream),
                transient=False,
            )
            self._task = self._progress.add_task("", total=self.total)
            self._progress.start()
        c = self.counts(trials)
        desc = f"{c['running']} running, {c['pending']} pending, {c['failed']} failed, {c['stopped early']} stopped"
        if self.best:
            desc += f" | best {self.best[0]:.4g} ({self.best[1]})"
        desc += f" | ETA {fmt_duration(self.eta(trials))}"
        self._progress.update(self._task, completed=self.n_done, description=desc)

    def _ended(self, trial) -> float:
        """Record and return how long the trial took (for the ETA and its event line)."""
        took = time.time() - self.started.get(trial.trial_id, self.t0)
        self.durations.append(took)
        return took
