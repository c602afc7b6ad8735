"""A trial's configs: the family's TRL config, LoraConfig and BitsAndBytesConfig of one point
(`build_configs`), with sweep's defaults; and the check, before a sweep starts, that TRL, PEFT and
transformers accept every point's (`ConfigCheck`, beside Ray's start-up)."""

from __future__ import annotations

import json
import os
import sys
import traceback
import weakref
from pathlib import Path
from typing import Any

from .. import secrets
from ..builtin import cache_root
from ..files import write_atomic
from ..runtime.cluster import may_have_cuda
from ..spec.axes import resolved_section
from ..spec.families import config_kwargs, family_of
from ..spec.load import SweepSpec
from ..spec.points import point_id, point_label
from .model import precision, quantization_config

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


def build_configs(spec: SweepSpec, point: dict[str, Any], out_dir: Path, cuda: bool, resolve: bool = True):
    """(family, its trainer config, LoraConfig, BitsAndBytesConfig or None) for one point.
    `resolve`: read `${env:NAME}` / `${file:PATH}` references (a trial does, where the values
    are used; the driver's check of every point leaves them to the trials' nodes)."""
    from peft import LoraConfig

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
    building the configs imports TRL, PEFT and transformers (seconds of CPU), which a sweep's driver
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

        # The spec sealed (secrets.seal): no secret crosses a pipe or reaches a key, references stay unresolved.
        sealed, cuda = secrets.sealed_spec(spec, {}), spec.resources.gpu != 0
        points = checked_points(sealed)
        keys = [_config_key(sealed, p, cuda and may_have_cuda()) for p in points]
        known = set(self._remembered())
        todo = [(p, k) for p, k in zip(points, keys) if k not in known]
        self.keys, self.process = [k for _, k in todo], None
        if not todo:
            return
        root = str(Path(__file__).resolve().parents[2])  # this copy of sweep, installed or not
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
            "SWEEP_SKIP_BITSANDBYTES": "1",  # it builds BitsAndBytesConfig, loads no model (model.skip_bitsandbytes)
        }
        code = "from sweep.trial.configs import ConfigCheck; ConfigCheck.serve()"
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
        return cache_root() / cls.REMEMBERED

    @classmethod
    def _remembered(cls) -> list[str]:
        try:
            return list(json.loads(cls._path().read_text()))
        except (OSError, ValueError, TypeError):
            return []

    @classmethod
    def _remember(cls, keys: list[str]) -> None:
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
