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
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import logged_models, prepare, secrets, startup, tracking, trial_run, warm_model
from .axes import resolved_section
from .compat.hf_internals import planned_rows_usable, shared_reference_usable
from .metric_sender import MetricSender
from .model import uses_cuda
from .points import point_id, point_label
from .spec import SweepSpec
from .trial_run import TrialContext

FINAL = "sweep/final"  # set in a trial's last report: it has ended (a scheduler must not pause it)

# Settings a preference-tuning sweep wants unless the spec says otherwise.
TRAIN_DEFAULTS: dict[str, Any] = {
    "logging_steps": 5,
    "eval_strategy": "steps",
    "eval_steps": 0.25,  # a ratio: four evals per trial
    "save_strategy": "no",  # adapters are saved by sweep where asked, not as Trainer checkpoints
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
}
LORA_DEFAULTS: dict[str, Any] = {
    "r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "target_modules": "all-linear",
    "task_type": "CAUSAL_LM",
}


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
        # cores oversubscribe them (~20x slower on 2 cores). Ray sets OMP_NUM_THREADS likewise.
        torch.set_num_threads(max(1, int(spec.resources.cpu)))
        startup.keep_freed_memory()  # each step's activations reuse the last one's memory
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    if spec.sampled:  # sampled points could not all be checked up front
        from .axes import validate_point

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
            done = tracking.finished_trial_run(ctx.store_uri(), ctx.experiment_id, ctx.parent_run_id, trial_id)
            if done is None:
                run_id = trial_run.open_run(ctx, family, args, point, trial_id, resume_from, out_dir)
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
                    cuda, run_id, sender, trial_run.stored_first(report, sender, spec), started, resume_from
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
            trial_run.close_run(ctx, run_id, sender, log_path, status, reason, stopped_early)
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


def build_configs(spec: SweepSpec, point: dict[str, Any], out_dir: Path, cuda: bool, resolve: bool = True):
    """(family, its trainer config, LoraConfig, BitsAndBytesConfig or None) for one point.
    `resolve`: read `${env:NAME}` / `${file:PATH}` references (a trial does, where the values
    are used; the driver's check of every point leaves them to the trials' nodes)."""
    from peft import LoraConfig

    from .families import config_kwargs, family_of
    from .model import precision, quantization_config

    read = secrets.resolve if resolve else (lambda section: section)
    train = {**TRAIN_DEFAULTS, **read(resolved_section(spec, "train", point))}
    train.update(precision(train, cuda))
    if not cuda:
        train.setdefault("activation_checkpointing", False)  # recompute costs more than it saves on CPU
        train["use_cpu"] = True
    # sweep owns output and tracking: its own MLflow logger, no Trainer integrations.
    train.update(output_dir=str(out_dir), report_to=[], run_name=point_id(point))
    if spec.scheduler.pauses:  # a checkpoint at every eval, for the scheduler to pause the trial at
        train.update(
            save_strategy=train["eval_strategy"],
            save_steps=train.get("eval_steps"),
            save_total_limit=1,
            save_only_model=False,
        )
    family = family_of(train.get("loss_type"))
    args = family.config_class()(**config_kwargs(family, train))
    lora = LoraConfig(**{**LORA_DEFAULTS, **read(resolved_section(spec, "lora", point))})
    q = {"mode": spec.quantization.get("mode", "auto"), **read(resolved_section(spec, "quantization", point))}
    compute_dtype = "bfloat16" if args.bf16 else "float16" if args.fp16 else "float32"
    return family, args, lora, quantization_config(q, cuda, compute_dtype)


def checked_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The points whose configs are built before a sweep starts: every grid point, each sampled
    axis at its first value (its lower bound, or its first choice)."""
    first = {name: next(iter(sampler.values()))[0] for name, sampler in spec.sampled.items()}
    return [{**point, **first} for point in spec.points()]


def config_problem(spec: SweepSpec, points: list[dict[str, Any]], cuda: bool) -> tuple[str, str] | None:
    """(field, problem) of the first point whose configs TRL, PEFT or transformers refuse to
    construct (their own rules across fields, in `__post_init__`), or None. `cuda`: whether
    the trials train on a GPU; where this process has none (`plan` on a laptop, a CPU head
    node), the configs are built for the CPU: transformers' device checks belong to the GPU."""
    import tempfile

    import torch

    cuda = cuda and torch.cuda.is_available()

    with tempfile.TemporaryDirectory() as out:
        for point in points:
            try:
                build_configs(spec, point, Path(out), cuda, resolve=False)
            except (ValueError, TypeError, KeyError, ImportError) as e:
                files = [frame.filename for frame in traceback.extract_tb(e.__traceback__)]
                section = "lora" if any("/peft/" in f for f in files) else "train"
                section = "quantization" if any("quantization_config" in f for f in files) else section
                text = " ".join(str(e).split()) or type(e).__name__
                where = f" (at {point_label(point)})" if point else ""
                return section, secrets.mask_text(f"{text}{where}")
    return None


class ConfigCheck:
    """`config_problem` for every point of a sweep, in a process of its own started at once:
    building the configs imports TRL, PEFT and transformers (~8 CPU-s), which a sweep's driver
    otherwise leaves to its workers, so it runs beside Ray's start-up. Configs are built for
    this machine's device (for the CPU where it has no CUDA, as in `plan`). A point whose
    configs were built before, with the same libraries, is not built again (`REMEMBERED`):
    a resumed or re-run sweep, or one of a series of like sweeps, starts nothing."""

    TIMEOUT_S = 600
    REMEMBERED = "configs-built.json"  # in builtin.cache_root(): keys of points built without a problem
    KEEP = 20_000

    def __init__(self, spec: SweepSpec):
        import pickle
        import subprocess

        from .cluster import may_have_cuda

        # The spec sealed (secrets.seal): no secret crosses a pipe or reaches a key, references stay unresolved.
        sealed, cuda = secrets.sealed_spec(spec, {}), spec.resources.gpu != 0
        points = checked_points(sealed)
        keys = [_config_key(sealed, p, cuda and may_have_cuda()) for p in points]
        known = set(self._remembered())
        todo = [(p, k) for p, k in zip(points, keys) if k not in known]
        self.keys, self.process = [k for _, k in todo], None
        if not todo:
            return
        root = str(Path(__file__).resolve().parents[1])  # this copy of sweep, installed or not
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
            "SWEEP_SKIP_BITSANDBYTES": "1",  # it builds BitsAndBytesConfig, loads no model (model.skip_bitsandbytes)
        }
        code = "from sweep.trial import ConfigCheck; ConfigCheck.serve()"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        weakref.finalize(self, self.process.kill)  # a sweep that stops first leaves no check behind
        request = pickle.dumps((sealed, [p for p, _ in todo], cuda))
        stdin, self.process.stdin = self.process.stdin, None  # written once here; `communicate` reads
        try:
            stdin.write(request)
            stdin.close()
        except OSError:  # it died at start: `result` says so
            pass

    @staticmethod
    def serve() -> None:
        import pickle

        spec, points, cuda = pickle.loads(sys.stdin.buffer.read())
        sys.stdout.write(json.dumps(config_problem(spec, points, cuda)))

    def result(self, log) -> tuple[str, str] | None:
        """(field, problem) of the first point whose configs are refused, or None; where the
        check itself could not run, a warning, and the trials will say."""
        import subprocess

        if self.process is None:
            return None
        try:
            out, _ = self.process.communicate(timeout=self.TIMEOUT_S)
            if self.process.returncode == 0:
                problem = json.loads(out)
                if problem:
                    return tuple(problem)
                self._remember(self.keys)
                return None
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        log("warning: the trials' configs could not be checked before the sweep; the trials will say")
        return None

    @classmethod
    def _path(cls) -> Path:
        from .builtin import cache_root

        return cache_root() / cls.REMEMBERED

    @classmethod
    def _remembered(cls) -> list[str]:
        try:
            return list(json.loads(cls._path().read_text()))
        except (OSError, ValueError, TypeError):
            return []

    @classmethod
    def _remember(cls, keys: list[str]) -> None:
        from .files import write_atomic

        kept = list(dict.fromkeys(cls._remembered() + keys))[
            -cls.KEEP :
        ]  # sweeps writing at once may lose a key: it is rebuilt
        try:
            cls._path().parent.mkdir(parents=True, exist_ok=True)
            write_atomic(cls._path(), json.dumps(kept))
        except OSError:
            pass


def _config_key(spec: SweepSpec, point: dict[str, Any], cuda: bool) -> str:
    """What a point's configs are built from: its sections, sweep's defaults, the libraries."""
    import hashlib
    import importlib.metadata

    parts = [
        [importlib.metadata.version(lib) for lib in ("trl", "peft", "transformers")],
        cuda,
        spec.scheduler.pauses,
        spec.quantization.get("mode"),
        [resolved_section(spec, s, point) for s in ("train", "lora", "quantization")],
        TRAIN_DEFAULTS,
        LORA_DEFAULTS,
    ]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _train(ctx: TrialContext, configs: tuple, attempt: Attempt) -> dict[str, float]:
    """Load, train and evaluate one point with its `build_configs` configs; its final metrics."""
    from .callbacks import FiniteGuard, MetricsCallback
    from .data import load_preference_data
    from .model import disable_bnb_cpu_repack, load_tokenizer, resolve_model_path

    spec = ctx.spec
    family, args, lora, bnb = configs
    cuda, run_id = attempt.cuda, attempt.run_id
    model_path = ctx.model_path or resolve_model_path(spec.model)
    tokenizer = load_tokenizer(model_path)
    data = load_preference_data(spec.dataset)
    model = warm_model.base_model(model_path, bnb, cuda, bf16=args.bf16)  # kept loaded by a warm worker

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
        and family.name in prepare.PREPARED
        and not args.precompute_ref_log_probs
        and shared_reference_usable(log=print)
    )
    if shared_reference:
        trainer_class = prepare.prepared_trainer(family.name)
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
        from .paired_stopping import PER_PROMPT  # with Ray Tune's schedulers: only where one is used

        callbacks[0].reported = lambda: {PER_PROMPT: list(judge.last.totals)} if judge.last else {}
    if paired is not None or judge is not None:
        trainer_class = _with_evaluations(trainer_class, family, paired, judge, at_end_only=spec.judge.when == "end")
    cache = cached = None
    if shared_reference:  # one reference pass per sweep, not one per step of every trial
        key = prepare.ref_cache_key(model, tokenizer, {"train": train_data, "eval": eval_data}, args, bnb, cuda)
        cache = Path(ctx.cache_dir or spec.results_path("cache")) / f"ref-{key}"
        cached = prepare.load_reference(cache)  # tokenised, with the reference columns: no tokenising either
        if cached is not None:
            eval_data = cached["eval"]
    # Only the train rows this trial reads are tokenised (and given reference log-probs).
    plan = prepare.plan_rows(len(train_data), args) if planned_rows_usable(log=print) else None
    if plan is not None:
        args.train_sampling_strategy = "sequential"  # its train split lists the rows in the order they are read
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_data if plan is None and cache is None else prepare.first_rows(train_data, plan, cached),
        eval_dataset=eval_data,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=callbacks,
    )
    if bnb is not None and not cuda:  # before any eval-mode forward (the reference pass below is one)
        disable_bnb_cpu_repack(trainer.model)
    if plan is not None or cache is not None:
        callbacks[0].timings.update(prepare.read_rows(trainer, train_data, plan, cache, cached))

    try:
        trainer.train(resume_from_checkpoint=attempt.resume_from)  # adapter, optimizer, schedule, RNG, data position
        last_eval = max((h["step"] for h in trainer.state.log_history if "eval_loss" in h), default=-1)
        if last_eval != trainer.state.global_step:  # always finish on a held-out measurement
            trainer.evaluate()
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
        warm_model.release_base_model(trainer.model)  # the adapter off; the next trial checks the base first
        if spec.scheduler.pauses:  # ours, not ones the spec asked for: Ray Tune holds the copy it resumes from
            for checkpoint in Path(args.output_dir).glob("checkpoint-*"):
                shutil.rmtree(checkpoint, ignore_errors=True)
    return callbacks[0].latest


def _log_samples(ctx, run_id, model, tokenizer, pairs) -> None:
    """Greedy answers to the first held-out prompts, with the base model's, as an MLflow table."""
    from .evaluation import generate_samples

    samples = ctx.spec.samples
    prompts = pairs.select(range(min(samples.prompts, len(pairs))))["prompt"]
    table = generate_samples(model, tokenizer, prompts, samples.max_new_tokens)
    tracking.client(ctx.store_uri()).log_table(run_id, data=table, artifact_file=tracking.SAMPLES)


def _judge(ctx: TrialContext, tokenizer, run_id: str | None):
    """The trial's judge of generations over the sweep's judged held-out prompts."""
    from .judge import Judge, held_out_rows

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

    from .evaluation import PairedEval

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
