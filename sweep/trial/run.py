"""One trial = one point of the grid = a TRL preference trainer with a LoRA adapter.

`run_trial` is a plain function: Ray Tune calls it (see orchestrate.py), and so can you:

    spec = load_spec("search_spaces/beta_grid.yaml")
    metrics = run_trial(TrialContext(spec=spec), {"loss_type": "ipo", "beta": 0.1})

Read top to bottom it is the whole training path: threads, model, data, configs, trainer
(DPOTrainer, or KTO/CPO/ORPO's per `loss_type`, see families.py), train, final eval, and
an MLflow run that always ends FINISHED, FAILED or KILLED.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import secrets
from ..compat.hf_internals import planned_rows_usable, shared_reference_usable
from ..data import load_preference_data
from ..record import judge_tables, logged_models, tracking
from ..runtime import planned_rows, shared_cache, startup
from ..spec.axes import validate_point
from ..spec.points import point_id
from . import harness, kept_model, mlflow_run
from .configs import build_configs
from .evaluation import PairedEval, generate_samples
from .judge import Judge, held_out_rows
from .metric_sender import MetricSender
from .mlflow_run import TrialContext
from .model import disable_bnb_cpu_repack, load_tokenizer, resolve_model_path, uses_cuda

# What a trial reports to Ray Tune besides its metrics, read by the schedulers (driver/, compat/halving.py).
FINAL = "sweep/final"  # set in a trial's last report: it has ended (a scheduler must not pause it)
PER_PROMPT = "judge/per_prompt"  # under `scheduler: paired`: its score of each judged prompt, in the prompts' order


@dataclasses.dataclass
class Attempt:
    """One attempt at a trial: where it runs, its MLflow run and metric sender, whom it reports to, when it
    started, and the checkpoint it resumes from (a trial paused at a rung)."""

    cuda: bool
    run_id: str | None = None
    sender: MetricSender | None = None  # the run's metrics, sent off the training thread
    report: Callable[..., None] | None = None
    started: float = 0.0
    resume_from: str | None = None


def run_trial(
    ctx: TrialContext, point: dict[str, Any], report: Callable[..., None] | None = None, resume_from: str | None = None
) -> dict[str, float]:
    """Train one point; return its final metrics.

    `report` receives the metrics at every eval and, last, the final ones (with `FINAL` set).
    Where the scheduler pauses trials (`scheduler.pauses`), every eval also writes a Trainer
    checkpoint and `report(metrics, checkpoint_dir)` gets its folder; `resume_from` is such a
    folder: the trial goes on from there, logging into the MLflow run it started.
    """
    import torch

    started = time.time()
    spec = ctx.spec
    cuda = uses_cuda(spec.resources.gpu if ctx.gpu is None else ctx.gpu)
    if not cuda:
        # One thread per CPU the trial holds: trials side by side with more threads than
        # cores oversubscribe them and slow every one down. Ray sets OMP_NUM_THREADS likewise.
        torch.set_num_threads(max(1, int(spec.resources.cpu)))
        startup.keep_freed_memory()  # each step's activations reuse the last one's memory
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    if spec.sampled:  # sampled points could not all be checked up front
        validate_point(spec, point)
    trial_id = point_id(point)
    out_dir = Path(ctx.trials_dir or spec.results_path(spec.name, "trials")) / trial_id
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / tracking.TRIAL_LOG
    family, args, lora, bnb = build_configs(spec, point, out_dir, cuda)
    resolved = {
        "point": point,
        "trial_id": trial_id,
        "trainer": family.trainer.replace(":", "."),
        "model": spec.model,
        "dataset": dataclasses.asdict(spec.dataset),
        "train": args.to_dict(),
        "lora": lora.to_dict(),
        "quantization": bnb.to_dict() if bnb is not None else None,
    }
    (out_dir / tracking.TRIAL_CONFIG).write_text(json.dumps(secrets.mask(resolved), indent=2, default=str))

    run_id = None
    if ctx.store_uri():
        try:
            done = tracking.finished_trial_run(ctx.sweep_run(), trial_id)
            if done is None:
                run_id = mlflow_run.open_run(ctx, family, args, point, trial_id, resume_from, out_dir)
        except Exception as e:
            raise tracking.StoreUnreachable.of(ctx.store_uri(), "the trial's run could not be opened", e) from e
        if done is not None:
            # Finished before the driver was stopped (MLflow knew, Ray's state did not yet):
            # never train a point twice, hand back what it measured.
            metrics = dict(done.data.metrics)
            if report is not None:
                report({**metrics, FINAL: True})
            return metrics

    status, reason, stopped_early = "FINISHED", None, False
    sender = MetricSender(ctx.store_uri(), run_id, spec.tracking.retry_s) if run_id is not None else None
    try:
        with _output_to(log_path if ctx.log_to_file else None):
            print(f"trial {trial_id} (pid {os.getpid()}): {point}", flush=True)
            try:
                attempt = Attempt(
                    cuda, run_id, sender, mlflow_run.stored_first(report, sender, spec), started, resume_from
                )
                metrics = _train(ctx, (family, args, lora, bnb), attempt)
            except BaseException as e:
                # SystemExit: Ray Tune's scheduler stopped the trial at a report; KeyboardInterrupt: Ctrl-C.
                status = "KILLED" if isinstance(e, (SystemExit, KeyboardInterrupt)) else "FAILED"
                if isinstance(e, SystemExit) and spec.scheduler.type != "none":
                    stopped_early = True
                    reason = None
                    verb = "paused (or stopped)" if spec.scheduler.pauses else "stopped early"
                    print(f"trial {verb} by the {spec.scheduler.type} scheduler", flush=True)
                else:
                    reason = "stopped" if status == "KILLED" else f"{failure_reason(e)}\n\n{traceback.format_exc()}"
                    print(reason if status == "FAILED" else "trial stopped", flush=True)
                raise
    finally:
        secrets.mask_file(log_path)  # a library's error may have quoted a secret
        if run_id is not None:
            mlflow_run.close_run(ctx, run_id, sender, log_path, status, reason, stopped_early)
    if report is not None:
        report({**metrics, FINAL: True})
    return metrics


@contextlib.contextmanager
def _output_to(path: Path | None):
    """Send this process's stdout and stderr (Python and native, library loggers included)
    to `path` for the duration: a trial's chatter belongs in its log, not the sweep console."""
    if path is None:
        yield
        return
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def _train(ctx: TrialContext, configs: tuple, attempt: Attempt) -> dict[str, float]:
    """Load, train and evaluate one point with its `build_configs` configs; its final metrics."""
    from .callbacks import FiniteGuard, MetricsCallback

    spec = ctx.spec
    family, args, lora, bnb = configs
    cuda, run_id = attempt.cuda, attempt.run_id
    model_path = ctx.model_path or resolve_model_path(spec.model)
    tokenizer = load_tokenizer(model_path)
    data = load_preference_data(spec.dataset)
    model = kept_model.base_model(model_path, bnb, cuda, bf16=args.bf16)  # kept loaded by a warm worker

    # The seed drives LoRA's initial weights too, drawn when the trainer wraps the model.
    from transformers import set_seed

    set_seed(args.seed)
    callbacks = [MetricsCallback(attempt.sender, attempt.report, attempt.started, checkpoints=spec.scheduler.pauses)]
    if spec.stop_on_nonfinite:
        callbacks.append(FiniteGuard())
    train_data, eval_data = data["train"], data["eval"]
    trainer_class = family.trainer_class()
    shared_reference = (
        spec.share_reference
        and family.name in shared_cache.PREPARED
        and not args.precompute_ref_log_probs
        and shared_reference_usable(log=print)
    )
    if shared_reference:
        trainer_class = shared_cache.prepared_trainer(family.name)
    if not family.paired:  # KTO: one row per completion, labelled desirable or not
        from trl.data_utils import unpair_preference_dataset

        # Shuffle after unpairing: it lists every desirable row first, so early batches would have no undesirable one.
        train_data = unpair_preference_dataset(train_data).shuffle(seed=args.seed)
        eval_data = unpair_preference_dataset(eval_data)
    # Every family gets DPO's held-out accuracy against the base model (KTO logs none, SimPO
    # and ORPO log rewards without a reference), and every trial the judge's metrics.
    paired = None if family.name == "dpo" else (data["eval"], tokenizer, args, cuda)
    judge = _judge(ctx, tokenizer, run_id) if spec.judge.prompts else None
    if judge is not None and spec.scheduler.type == "paired":  # it compares trials prompt by prompt
        callbacks[0].reported = lambda: {PER_PROMPT: list(judge.last.totals)} if judge.last else {}
    if paired is not None or judge is not None:
        trainer_class = _with_evaluations(trainer_class, family, paired, judge, at_end_only=spec.judge.when == "end")
    cache = cached = None
    if shared_reference:  # one reference pass per sweep, not one per step of every trial
        key = shared_cache.ref_cache_key(model, tokenizer, {"train": train_data, "eval": eval_data}, args, bnb, cuda)
        cache = Path(ctx.cache_dir or spec.results_path("cache")) / f"ref-{key}"
        cached = shared_cache.load_reference(cache)  # tokenised, with the reference columns: no tokenising either
        if cached is not None:
            eval_data = cached["eval"]
    # Only the train rows this trial reads are tokenised (and given reference log-probs).
    plan = planned_rows.plan_rows(len(train_data), args) if planned_rows_usable(log=print) else None
    if plan is not None:
        args.train_sampling_strategy = "sequential"  # its train split lists the rows in the order they are read
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_data
        if plan is None and cache is None
        else planned_rows.first_rows(train_data, plan, cached),
        eval_dataset=eval_data,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=callbacks,
    )
    if bnb is not None and not cuda:  # before any eval-mode forward (the reference pass below is one)
        disable_bnb_cpu_repack(trainer.model)
    if plan is not None or cache is not None:
        callbacks[0].timings.update(shared_cache.read_rows(trainer, train_data, plan, cache, cached))

    try:
        trainer.train(resume_from_checkpoint=attempt.resume_from)  # adapter, optimizer, schedule, RNG, data position
        last_eval = max((h["step"] for h in trainer.state.log_history if "eval_loss" in h), default=-1)
        if last_eval != trainer.state.global_step:  # always finish on a held-out measurement
            trainer.evaluate()
        if spec.harness.tasks:  # benchmark regression, on the policy in memory
            with trainer.accelerator.autocast():
                measured = harness.run(
                    trainer.model, tokenizer, spec.harness, Path(ctx.cache_dir or spec.results_path("cache")),
                    on_base=lambda base: _log_base(ctx, {harness.BASE_PREFIX + k: v for k, v in base.items()}),
                )  # fmt: skip
            callbacks[0].on_log(trainer.args, trainer.state, trainer.control, logs=measured)
        if spec.samples.prompts and run_id is not None:
            with trainer.accelerator.autocast():  # the training step's precision (see Evaluations.log)
                _log_samples(ctx, run_id, trainer.model, tokenizer, data["eval"])
        if spec.save != "none":  # the adapter alone (a few MB on real models), not Trainer checkpoints
            adapter = str(Path(args.output_dir) / tracking.ADAPTER)
            trainer.model.save_pretrained(adapter)
            if run_id is not None and spec.save == "all":  # `best`: the driver logs the winner's at the end
                c = tracking.client(ctx.store_uri())
                logged_models.log_adapter(c, c.get_run(run_id), adapter, trainer.state.global_step)
    finally:
        kept_model.release_base_model(trainer.model)  # the adapter off; the next trial checks the base first
        if spec.scheduler.pauses:  # ours, not ones the spec asked for: Ray Tune holds the copy it resumes from
            for checkpoint in Path(args.output_dir).glob("checkpoint-*"):
                shutil.rmtree(checkpoint, ignore_errors=True)
    return callbacks[0].latest


def _log_samples(ctx, run_id, model, tokenizer, pairs) -> None:
    """Greedy answers to the first held-out prompts, with the base model's, as an MLflow table."""
    samples = ctx.spec.samples
    prompts = pairs.select(range(min(samples.prompts, len(pairs))))["prompt"]
    table = generate_samples(model, tokenizer, prompts, samples.max_new_tokens)
    tracking.client(ctx.store_uri()).log_table(run_id, data=table, artifact_file=tracking.SAMPLES)


def _log_base(ctx: TrialContext, metrics: dict[str, float]) -> None:
    """The base model's scores on the sweep's parent run, once."""
    if ctx.store_uri() and ctx.parent_run_id:
        judge_tables.log_base_scores(ctx.store_uri(), ctx.parent_run_id, metrics)


def _judge(ctx: TrialContext, tokenizer, run_id: str | None):
    """The trial's judge of generations over the sweep's judged held-out prompts."""
    spec = ctx.spec
    cache = Path(ctx.cache_dir or spec.results_path("cache"))
    return Judge(
        spec.judge,
        held_out_rows(spec),
        tokenizer,
        cache_dir=cache,
        import_paths=ctx.import_paths or spec.import_paths(),
        uri=ctx.store_uri(),
        run_id=run_id,
        parent_run_id=ctx.parent_run_id,
    )


def _with_evaluations(trainer_class, family, paired, judge, at_end_only: bool):
    """`trainer_class` whose evaluations also log, where given:

    - `paired` (pairs, tokenizer, args, cuda): DPO's held-out `eval_rewards/accuracies` and
      margins against the base model. KTO trains on unpaired rows and logs none; SimPO's and
      ORPO's own rewards have no reference (kept as `eval_<family>/rewards/*`). DPO's implicit
      reward (beta x log-ratio to the base) on the same held-out pairs puts every family in one
      comparable table, rankable by the default metric;
    - `judge`: the judged generations (`eval_judge/*`), at every evaluation or only the final one.
    """
    from transformers import Trainer

    class Evaluations(Trainer):
        # Placed just above Trainer in the method order (below): the family trainer's own `log`
        # has added its stored eval metrics (CPO/ORPO do) by the time this one sees `logs`.
        _paired: PairedEval | None = None

        def log(self, logs, start_time=None):
            if "eval_loss" in logs:
                if paired is not None:
                    self._log_paired(logs)
                if judge is not None and (not at_end_only or self.state.global_step >= self.state.max_steps):
                    # `log` runs outside the training step's autocast: in bf16 training a 4-bit base
                    # mixes dtypes (CPO/ORPO keep norms fp32 and the output layer bf16).
                    with self.accelerator.autocast():
                        logs.update(judge(self.model, self.state.global_step))
            super().log(logs, start_time)

        def _log_paired(self, logs):
            pairs, tokenizer, args, cuda = paired
            if self._paired is None:
                self._paired = PairedEval(
                    self.model,
                    tokenizer,
                    pairs,
                    beta=args.beta,
                    max_length=args.max_length,
                    batch_size=args.per_device_eval_batch_size,
                    cpu=not cuda,
                    bf16=args.bf16,
                )
            for key in ("eval_rewards/accuracies", "eval_rewards/margins"):
                if key in logs:  # the family's own, reference-free reward
                    logs[f"eval_{family.name}/{key.removeprefix('eval_')}"] = logs.pop(key)
            logs.update(
                {k: v for k, v in self._paired().items() if k in ("eval_rewards/accuracies", "eval_rewards/margins")}
            )

    class WithEvaluations(trainer_class, Evaluations):
        pass

    WithEvaluations.__name__ = trainer_class.__name__
    return WithEvaluations


def failure_reason(e: BaseException) -> str:
    """One line saying why a trial failed; CUDA out-of-memory is named as such."""
    import torch

    from .callbacks import NonFiniteLoss

    if isinstance(e, torch.cuda.OutOfMemoryError) or "CUDA out of memory" in str(e):
        return f"CUDA out of memory: {str(e).splitlines()[0]}"
    if isinstance(e, NonFiniteLoss):
        return f"non-finite loss: {e}"
    return f"{type(e).__name__}: {e}"
