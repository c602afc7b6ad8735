"""What a trial's Trainer reports and guards, step by step (transformers callbacks).

Imported by the trial as it builds its trainer, not by the sweep's driver: the callback
base class pulls in transformers' Trainer stack (PEFT included), seconds of CPU.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

from transformers import TrainerCallback

from .metric_sender import MetricSender


class NonFiniteLoss(RuntimeError):
    """The loss or the gradients became NaN/inf: the trial is stopped and recorded FAILED."""


class FiniteGuard(TrainerCallback):
    """Stops a trial the moment its loss or its gradients stop being finite.

    Checked before every optimizer step (only parameters with gradients, i.e. the adapter),
    so a diverging point fails at once instead of burning its remaining steps on NaNs.
    """

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        import torch

        for name, p in model.named_parameters():
            if p.grad is not None and not torch.isfinite(p.grad).all():
                raise NonFiniteLoss(f"gradient of {name} is not finite at step {state.global_step + 1}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, float) and not math.isfinite(value):
                raise NonFiniteLoss(f"{key} is {value} at step {state.global_step}")


class StepStats(TrainerCallback):
    """A run's steady training speed and peak GPU memory, measured at the end of training:

    - `time/step_s`: seconds per optimizer step after the first (kernel warm-up, first
      batch), evaluations during training left out;
    - `time/tokens_per_s`: input tokens per second over the same steps, where the config
      counts them (`include_num_input_tokens_seen: non_padding`);
    - `gpu/peak_allocated_gib`, `gpu/peak_reserved_gib`: torch's peak on this trial's GPU
      since training began, base model included: what to size `resources.gpu` by.
    """

    def on_train_begin(self, args, state, control, **kwargs):
        import torch

        self.cuda = torch.cuda.is_available() and not args.use_cpu
        if self.cuda:
            # What a warm worker's earlier trial left in torch's cache is not this trial's: freed
            # first, the reserved peak counts this trial's base model, adapter and activations only.
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        self.first: tuple[float, int] | None = None  # (time, tokens seen) at the first step's end
        self.last_step_end, self.eval_s, self.measured = 0.0, 0.0, {}

    def on_step_end(self, args, state, control, **kwargs):
        self.last_step_end = time.time()
        if self.first is None:
            self.first = (self.last_step_end, state.num_input_tokens_seen)

    def on_evaluate(self, args, state, control, **kwargs):
        if self.first is not None:  # an eval inside training runs right after a step ends
            self.eval_s += time.time() - self.last_step_end

    def on_train_end(self, args, state, control, **kwargs):
        import torch

        if self.first is not None and state.global_step > 1:
            seconds = time.time() - self.first[0] - self.eval_s
            self.measured["time/step_s"] = seconds / (state.global_step - 1)
            tokens = state.num_input_tokens_seen - self.first[1]
            if tokens > 0:
                self.measured["time/tokens_per_s"] = tokens / seconds
        if self.cuda:
            self.measured["gpu/peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
            self.measured["gpu/peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30


class MetricsCallback(StepStats):
    """Every metric TRL logs -> MLflow through `sender` (step = global step: `MetricSender`
    sends off the training thread); intermediate evals -> `report`;
    at the end, `StepStats`' speed and memory.

    The final eval is reported by `run_trial` after the MLflow run has ended: a scheduler
    may stop the trial at a report, and a finished trial must not be left RUNNING. With
    `checkpoints`, an eval is reported once the Trainer has saved the checkpoint of that
    step (the Trainer saves right after it evaluates), with the checkpoint's folder.
    """

    def __init__(
        self,
        sender: MetricSender | None,
        report: Callable[..., None] | None,
        started: float | None = None,
        checkpoints: bool = False,
        reported: Callable[[], dict] | None = None,
    ):
        self.sender, self.report, self.checkpoints = sender, report, checkpoints
        self.reported = reported  # more for the scheduler at each eval, not for MLflow (e.g. per-prompt scores)
        self.pending: dict[str, float] | None = None  # an eval waiting for its checkpoint
        self.latest: dict[str, float] = {}
        self.timings: dict[str, float] = {"time/trial_start_unix": started or time.time()}

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        # Where a trial's time goes (benchmarks/sweep_speedup.py reads these): set-up vs training.
        now = time.time()
        self.timings.update({"time/train_start_unix": now, "time/setup_s": now - self.timings["time/trial_start_unix"]})
        self.latest.update(self.timings)
        if self.sender is not None:
            self.sender.log(self.timings, 0)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        self.latest.update(logs)
        self.latest["global_step"] = state.global_step
        if self.sender is not None:
            self.sender.log({**logs, "global_step": state.global_step}, state.global_step)
        is_eval = any(k.startswith("eval_") for k in logs)
        if self.report is not None and is_eval and state.global_step < state.max_steps:
            result = {**self.latest, **(self.reported() if self.reported else {})}
            if self.checkpoints:
                self.pending = result
            else:
                self.report(result)

    def on_save(self, args, state, control, **kwargs):
        if self.pending is not None:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            metrics, self.pending = self.pending, None
            self.report(metrics, os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"))

    def on_train_end(self, args, state, control, **kwargs):
        super().on_train_end(args, state, control, **kwargs)
        self.latest.update(self.measured)
        if self.sender is not None and self.measured:
            self.sender.log(self.measured, state.global_step)
