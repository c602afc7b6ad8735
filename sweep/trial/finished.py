"""A finished trial loaded back from its record: its adapter on the base model (`load_trial`),
its held-out metrics recomputed and compared with what it logged (`verify`, `sweep evaluate`),
and the adapter merged into the base model as a standalone model (`promote`)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import load_preference_data
from ..record import dataset_inputs, logged_models, tracking
from ..record.tracking import client, log_metrics
from ..spec.schema import DatasetSpec
from .evaluation import paired_metrics
from .model import disable_bnb_cpu_repack, load_base_model, load_tokenizer, resolve_model_path

VERIFIED = ("eval_rewards/accuracies", "eval_rewards/margins")


@dataclass
class TrialModel:
    """A finished trial's adapter on its base model, rebuilt from its MLflow run alone."""

    run: Any
    config: dict  # the trial's resolved config (trial_config.json)
    model: Any  # PeftModel
    tokenizer: Any
    cuda: bool


def load_trial(uri: str, run, quantized: bool = True) -> TrialModel:
    """Download `run`'s adapter and resolved config; load the base model as the trial did
    (`quantized=False`: in 16-bit on GPU / 32-bit on CPU, for merging) with the adapter on top."""
    import torch
    from peft import PeftModel
    from transformers import BitsAndBytesConfig

    c = client(uri)
    local = Path(tempfile.mkdtemp(prefix="sweep-trial-"))
    adapter = logged_models.download_adapter(uri, run, local / "adapter")
    config = json.loads(Path(c.download_artifacts(run.info.run_id, tracking.TRIAL_CONFIG, str(local))).read_text())
    cuda = torch.cuda.is_available()
    path = resolve_model_path(config["model"], log=lambda *_: None)
    bnb = BitsAndBytesConfig.from_dict(config["quantization"]) if quantized and config.get("quantization") else None
    # Rebuilt as trained, in the trial's precision (bf16 on a GPU, or where a CPU trial asked for
    # it); for merging, unquantised, in 16-bit on a GPU.
    bf16 = bool(config["train"].get("bf16")) if quantized else cuda
    base = _as_trained(load_base_model(path, bnb, cuda, bf16=bf16), config["trainer"], bf16)
    if bnb is not None and not cuda:
        disable_bnb_cpu_repack(base)
    model = PeftModel.from_pretrained(base, adapter)
    return TrialModel(run, config, model, load_tokenizer(path), cuda)


def _as_trained(base, trainer: str, bf16: bool):
    """The base model in the dtypes the trial's trainer gave it. CPO's and ORPO's trainers
    prepare a 4-bit base for k-bit training (PEFT's `prepare_model_for_kbit_training`: every
    other weight in fp32; under bf16, TRL's `peft_module_casting_to_bf16` then puts the embeddings
    and output layer back in bf16); DPO's and KTO's train it as loaded. Recomputed on another
    layout, margins differ in their fourth digit and a near-tied pair can flip."""
    if not trainer.endswith(("CPOTrainer", "ORPOTrainer")) or not getattr(base, "is_loaded_in_4bit", False):
        return base
    from peft import prepare_model_for_kbit_training

    from ..compat.hf_internals import peft_casting_to_bf16

    base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    if bf16:
        peft_casting_to_bf16(base)
    return base


def verify(uri: str, run, log=print) -> dict[str, float]:
    """Recompute a finished trial's held-out accuracy and margin from its adapter and the base
    model, log them to its run as `verified_*`, and return {metric: value, "logged_<metric>": ...}."""
    trial = load_trial(uri, run)
    train = trial.config["train"]
    data = load_preference_data(DatasetSpec(**trial.config["dataset"]))
    metrics = paired_metrics(
        trial.model,
        trial.tokenizer,
        data["eval"],
        beta=train["beta"],
        max_length=train.get("max_length"),
        batch_size=train["per_device_eval_batch_size"],
        cpu=not trial.cuda,
        bf16=bool(train.get("bf16")),
    )
    result = {k: metrics[k] for k in VERIFIED}
    step = int(run.data.metrics.get("global_step", 0))
    log_metrics(uri, run.info.run_id, {f"verified_{k}": v for k, v in result.items()}, step)
    # Every family logs DPO's held-out metrics against the base model (trial.py), SimPO and ORPO included.
    result.update({f"logged_{k}": run.data.metrics.get(k, float("nan")) for k in VERIFIED})
    return result


def promote(uri: str, run, out: Path, sweep_name: str, register: str | None = None, log=print) -> Path:
    """Merge `run`'s adapter into its base model (loaded unquantised), save model and tokenizer
    to `out`, and log the merged model as an MLflow transformers model of the trial's run;
    `register`: a new version of that registered model, alias `best`."""
    import logging

    import mlflow

    logging.getLogger("mlflow.transformers").setLevel(logging.ERROR)  # model card / license notes
    trial = load_trial(uri, run, quantized=False)
    merged = trial.model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out))
    trial.tokenizer.save_pretrained(str(out))
    provenance = {
        "sweep": sweep_name,
        "parent_run_id": run.data.tags.get("mlflow.parentRunId"),
        "trial": run.info.run_name,
        "trial_run_id": run.info.run_id,
        "point": trial.config["point"],
        "base_model": trial.config["model"],
        "metrics": {k: v for k, v in run.data.metrics.items() if k.startswith("eval_")},
    }
    c = client(uri)
    # Requirements are given, not inferred: inference imports every package torch can use.
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.transformers.save_model(
            transformers_model={"model": merged, "tokenizer": trial.tokenizer},
            path=str(Path(tmp) / "model"),
            task="text-generation",
            pip_requirements=[f"{p}=={_version(p)}" for p in ("transformers", "torch", "accelerate", "safetensors")],
            metadata={"sweep": sweep_name, "trial": run.info.run_name},
        )
        step = int(run.data.metrics.get("global_step", 0))
        model_id = logged_models.log_merged(c, run, Path(tmp) / "model", step)
    logged_models.link_metrics(
        c, [c.get_logged_model(model_id)], list(run.data.metrics), dataset_inputs.evaluation_split(run)
    )
    provenance["mlflow_model"] = f"models:/{model_id}"
    c.set_tag(run.info.run_id, "sweep.promoted_to", str(out.resolve()))
    log(f"promoted {run.info.run_name} to {out} and to MLflow model models:/{model_id}")
    if register:
        version = logged_models.register(uri, model_id, run.info.run_id, register)
        provenance["registered"] = f"models:/{register}@{logged_models.ALIAS}"
        log(
            f"registered as {register} version {version}, alias {logged_models.ALIAS}: models:/{register}@{logged_models.ALIAS}"
        )
    (out / "sweep_promoted.json").write_text(json.dumps(provenance, indent=2, default=str))
    return out


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package).split("+")[0]  # torch 2.13.0+cpu -> 2.13.0, installable from PyPI
