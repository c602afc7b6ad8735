"""Field-level checks of a spec: a config field's value against the installed libraries'
options, the model, the dataset and the resources. Each raises `SpecError` naming the field."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..builtin import BUILTIN_DATASETS, BUILTIN_HARNESS_TASKS, BUILTIN_MODELS
from ..data import check_source
from ..errors import SpecError, unknown
from ..trial import scorers as scoring
from .catalogue import coerce
from .families import DPO_LOSS_TYPES, LOSS_TYPES, fields_catalogue, train_fields
from .schema import DatasetSpec, SweepSpec

QUANTIZATION_MODES = ("auto", "4bit", "8bit", "none")

# ---- config field catalogues (from the installed libraries, so they never drift) ----


def config_fields() -> dict[str, dict[str, Any]]:
    """{"train": {field: options}, "lora": {...}, "quantization": {...}} (catalogue.py).

    `train` is the union of DPOConfig, KTOConfig, CPOConfig and ORPOConfig (see families.py)."""
    known = fields_catalogue()
    return {"train": train_fields(), "lora": known["lora"], "quantization": known["quantization"]}


def section_of(field_name: str) -> str | None:
    """Which config section a field belongs to: 'train', 'lora', 'quantization' or None."""
    for section, fields in config_fields().items():
        if field_name in fields:
            return section
    return None


def check_field(where: str, section: str, name: str, value: Any) -> Any:
    """Check a value against the config field's options (coercing YAML's '5e-4' strings)."""
    value = coerce(where, value, config_fields()[section][name])
    if name == "loss_type":
        losses = [value] if isinstance(value, str) else value
        if not losses:
            raise SpecError(where, f"needs at least one loss type; valid: {', '.join(LOSS_TYPES)}")
        for lt in losses:
            if lt not in LOSS_TYPES:
                raise SpecError(where, unknown("loss type", lt, LOSS_TYPES, None))
        if len(losses) > 1 and any(lt not in DPO_LOSS_TYPES for lt in losses):
            other = next(lt for lt in losses if lt not in DPO_LOSS_TYPES)
            raise SpecError(
                where,
                f"{other!r} cannot be combined with other losses; combined losses (with "
                f"loss_weights) take DPO loss types only: {', '.join(DPO_LOSS_TYPES)}",
            )
    positive = (
        "beta",
        "learning_rate",
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "r",
        "gradient_accumulation_steps",
    )
    if name in positive and not value > 0:
        raise SpecError(where, f"must be > 0, got {value}")
    if name in ("max_steps", "max_length", "eval_steps", "logging_steps") and value is not None and value == 0:
        raise SpecError(where, "must not be 0")
    if name == "max_steps" and value < -1:
        raise SpecError(where, f"must be > 0 (or -1 to train by epochs), got {value}")
    return value


def check_keys(where: str, raw: dict, allowed: list[str]) -> None:
    for key in raw:
        if key not in allowed:
            path = f"{where}.{key}" if where else str(key)
            raise SpecError(path, unknown("field", key, allowed, None))


def check_mapping(where: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(where, f"must be a mapping of field: value, got {type(value).__name__}")
    return dict(value)


def normalise_quantization(q: Any) -> dict[str, Any]:
    """`auto`/`4bit`/... or a mapping of BitsAndBytesConfig fields -> {"mode": ..., **fields}."""
    if isinstance(q, str):
        if q not in QUANTIZATION_MODES:
            raise SpecError("quantization", unknown("mode", q, QUANTIZATION_MODES, None))
        return {"mode": q}
    if not isinstance(q, dict):
        raise SpecError(
            "quantization", f"must be one of {', '.join(QUANTIZATION_MODES)} or a mapping of BitsAndBytesConfig fields"
        )
    q = dict(q)
    mode = q.pop("mode", "8bit" if q.get("load_in_8bit") else "4bit")
    if mode not in QUANTIZATION_MODES:
        raise SpecError("quantization.mode", unknown("mode", mode, QUANTIZATION_MODES, None))
    fields = config_fields()["quantization"]
    check_keys("quantization", q, list(fields))
    return {"mode": mode, **{k: check_field(f"quantization.{k}", "quantization", k, v) for k, v in q.items()}}


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def validate_model(model: str) -> None:
    """A builtin name, a local directory holding a model and its tokenizer, or a hub id."""
    if model.startswith("builtin:"):
        if model.removeprefix("builtin:") not in BUILTIN_MODELS:
            raise SpecError("model", unknown("builtin model", model, [f"builtin:{m}" for m in BUILTIN_MODELS], None))
        return
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SpecError(
                "model", f"{model} is a directory without config.json: not a model saved with save_pretrained"
            )
        if not any((path / name).is_file() for name in TOKENIZER_FILES):
            raise SpecError(
                "model",
                f"{model} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save its tokenizer beside it",
            )
    elif path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise SpecError(
            "model",
            f"{model!r}: no such model directory, and not a hub id (org/name); "
            "expected builtin:tiny, a local model directory or a hub id",
        )


def unusable_inputs(spec: SweepSpec) -> list[tuple[str, str]]:
    """(field, problem) for each input this machine cannot use now: a hub id it cannot load
    (`unreachable_models`) or a data path that names no usable file (`data.check_source`).
    `run` refuses them before Ray starts; `plan`, which validates specs meant for another
    machine (a GPU box with a hub), warns."""
    problems = unreachable_models(spec)
    try:
        check_source(spec.dataset)
    except SpecError as e:
        problems.append((e.field, str(e).removeprefix(f"{e.field}: ")))
    return problems


def unreachable_models(spec: SweepSpec) -> list[tuple[str, str]]:
    """(field, problem) for each hub id the spec loads (the model, reward-model scorers) that this
    machine cannot load now: HF_HUB_OFFLINE is set and it is not in the local cache."""
    import os

    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes", "on"):
        return []
    sources = [("model", spec.model)] + [
        (f"judge.scorers[{i}]", s.source) for i, s in enumerate(spec.judge.scorers) if s.kind in ("reward_model", "llm")
    ]
    problems = []
    for where, source in sources:
        if source.startswith("builtin:") or Path(source).expanduser().is_dir():
            continue
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(source, "config.json"), str):
            problems.append(
                (
                    where,
                    f"{source} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                    f"download it first (hf download {source}) or unset HF_HUB_OFFLINE",
                )
            )
    return problems


def validate_dataset(ds: DatasetSpec) -> None:
    if ds.path.startswith("builtin:"):
        if ds.path.removeprefix("builtin:") not in BUILTIN_DATASETS:
            raise SpecError(
                "dataset.path", unknown("builtin dataset", ds.path, [f"builtin:{d}" for d in BUILTIN_DATASETS], None)
            )
    if ds.format == "transcript" and "prompt" in ds.columns:
        raise SpecError(
            "dataset.columns.prompt",
            "format transcript takes the prompt from the shared turns; map only chosen and rejected",
        )
    if not ds.chat_template and (ds.system_prompt or "system" in ds.columns):
        raise SpecError(
            "dataset.system_prompt", "a system prompt needs the chat template (dataset.chat_template: true)"
        )


def with_paths_resolved(scorer: scoring.Scorer, import_paths: list[str]) -> scoring.Scorer:
    """An LLM judge's template file, found beside the spec (then in the working directory), as
    an absolute path: trials run in folders of their own."""
    if scorer.kind != "llm" or not scorer.template or scorer.template.startswith("builtin:"):
        return scorer
    path = Path(scorer.template).expanduser()
    if not path.is_absolute():
        path = next((Path(p) / path for p in import_paths if (Path(p) / path).exists()), path.resolve())
    return dataclasses.replace(scorer, template=str(path))


def validate_judge(spec: SweepSpec) -> None:
    """The judge's settings and scorers (a callable is imported, a reward model's config read),
    and a ranking metric it must produce."""
    j = spec.judge
    if j.prompts and not j.scorers:
        raise SpecError("judge.scorers", "needs at least one scorer, e.g. [builtin:verifiable]")
    try:
        scorers = [
            with_paths_resolved(scoring.parse_scorer(f"judge.scorers[{i}]", raw), spec.import_paths())
            for i, raw in enumerate(j.scorers)
        ]
        for i, scorer in enumerate(scorers):
            if scorer.kind != "function":  # a function is user code: imported where a run needs it
                scoring.check_scorer(f"judge.scorers[{i}]", scorer, spec.import_paths())
    except scoring.ScorerError as e:
        raise SpecError(e.where, str(e)) from None
    names = [s.name for s in scorers]
    derived = [
        f"{s.name}_{d}" for s in scorers if s.kind == "llm" for d in ("unparsed", "lc")[: 1 + (s.mode == "pairwise")]
    ]
    reserved = set(scoring.TOTALS)
    clash = next((n for n in names if (names + derived).count(n) > 1 or n in reserved), None)
    if clash:
        raise SpecError(
            "judge.scorers",
            f"two scorers (or a scorer and a judge metric) are named {clash!r}; "
            "give one a `name:` (its metric is eval_judge/<name>)",
        )
    j.scorers = scorers
    if spec.metric.startswith(scoring.PREFIX):
        produced = [scoring.PREFIX + n for n in [*names, *derived, *sorted(reserved)]] if j.prompts else []
        if spec.metric not in produced:
            raise SpecError(
                "metric",
                f"{spec.metric} is not produced by this sweep's judge; "
                + (f"valid: {', '.join(produced)}" if produced else "set judge.prompts and judge.scorers"),
            )
        if j.when == "end" and spec.scheduler.type != "none":
            raise SpecError(
                "judge.when",
                f"scheduler {spec.scheduler.type} ranks trials by {spec.metric} at every "
                "evaluation: judge at every evaluation (when: eval)",
            )


def validate_harness(spec: SweepSpec) -> None:
    """What the spec alone says of its harness tasks: lm-eval is installed (the `harness`
    extra), builtin tasks exist, `include` folders are there. The task names are checked
    against lm-eval's index before Ray starts (trial/harness.py)."""
    import importlib.util

    if not spec.harness.tasks:
        return
    if importlib.util.find_spec("lm_eval") is None:
        raise SpecError(
            "harness.tasks",
            "lm-evaluation-harness is not installed; install the harness extra: pip install -e '.[harness]'",
        )
    for i, task in enumerate(spec.harness.tasks):
        name = task.task.removeprefix("builtin:")
        if task.task.startswith("builtin:") and name not in BUILTIN_HARNESS_TASKS:
            valid = [f"builtin:{t}" for t in BUILTIN_HARNESS_TASKS]
            raise SpecError(f"harness.tasks[{i}].task", unknown("builtin task", task.task, valid, None))
        if task.include:  # beside the spec, then the working directory; absolute: trials run elsewhere
            beside = [Path(p) / task.include for p in spec.import_paths()]
            folder = next((f for f in beside if f.is_dir()), Path(task.include).expanduser())
            if not folder.is_dir():
                raise SpecError(f"harness.tasks[{i}].include", f"{task.include} is not a folder (of task YAMLs)")
            task.include = str(folder.resolve())
