"""`sweep init`: a first spec from a model and a preference dataset.

The dataset's columns are matched against the layouts the data loader knows (the README's
dataset table); the spec gets the `columns:`/`format:` that layout needs, a small loss x beta
grid, and training settings sized for the model (the embedded default's, or QLoRA settings
of the published 7B recipes). It is validated like any spec before it is written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from ..data import _load_source
from ..errors import SpecError
from .load import DatasetSpec, SweepSpec, parse_spec

# (name, columns the source must have, what the spec's `dataset:` needs for it), most specific first.
LAYOUTS: list[tuple[str, set[str], dict[str, Any]]] = [
    ("prompt/chosen/rejected", {"prompt", "chosen", "rejected"}, {}),
    (
        "Intel/orca_dpo_pairs",
        {"question", "chatgpt", "llama2-13b-chat"},
        {"columns": {"prompt": "question", "chosen": "chatgpt", "rejected": "llama2-13b-chat"}},
    ),
    (
        "stack-exchange-paired",
        {"question", "response_j", "response_k"},
        {"columns": {"prompt": "question", "chosen": "response_j", "rejected": "response_k"}},
    ),
    ("transcripts (hh-rlhf text or message lists)", {"chosen", "rejected"}, {"format": "transcript"}),
]

EMBEDDED = {  # the embedded default's settings: a few minutes on 2 CPU cores
    "train": {
        "learning_rate": 5.0e-4,
        "max_steps": 60,
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 50,
        "warmup_steps": 5,
        "max_length": 128,
        "logging_steps": 5,
        "eval_strategy": "steps",
        "eval_steps": 20,
        "seed": 42,
    },
    "lora": {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"},
    "answer_tokens": 24,
}
REAL = {  # QLoRA on one GPU, as the NeuralHermes and Hugging Face recipes
    "train": {
        "learning_rate": 5.0e-5,
        "max_steps": 200,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 4,
        "per_device_eval_batch_size": 8,
        "warmup_steps": 10,
        "max_length": 1024,
        "logging_steps": 10,
        "eval_strategy": "steps",
        "eval_steps": 50,
        "gradient_checkpointing": True,
        "seed": 42,
    },
    "lora": {"r": 16, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": "all-linear"},
    "answer_tokens": 128,
}


def detect_layout(columns: list[str]) -> tuple[str, dict[str, Any]]:
    """(layout name, the `dataset:` settings it needs) for a source with these columns."""
    have = set(columns)
    for name, needed, settings in LAYOUTS:
        if needed <= have:
            extra = (
                {"columns": {**settings["columns"], "system": "system"}}
                if "system" in have and "columns" in settings
                else {}
            )
            return name, {**settings, **extra}
    known = "; ".join(f"{name} ({', '.join(sorted(needed))})" for name, needed, _ in LAYOUTS)
    raise SpecError(
        "dataset",
        f"columns {', '.join(columns) or '(none)'} match no known layout; known layouts: {known}; "
        "map yours with dataset.columns {prompt: ..., chosen: ..., rejected: ...} in a spec",
    )


def source_columns(path: str) -> list[str]:
    """The column names of a dataset source's train split (read as `run` would)."""
    source = _load_source(DatasetSpec(path=path))
    split = source["train"] if "train" in source else next(iter(source.values()))
    return list(split.column_names)


class Scaffold(NamedTuple):
    layout: str  # the dataset layout recognised
    path: str  # where the spec is meant to be written (its launch command names it)
    text: str  # the spec's YAML, with its header
    spec: SweepSpec  # the same, validated


def spec_from_data(model: str, dataset: str, name: str | None = None, out: str | None = None) -> Scaffold:
    """A first spec for tuning `model` on `dataset`, to be written to `out` (default `<name>.yaml`)."""
    columns = source_columns(dataset)
    layout, settings = detect_layout(columns)
    name = name or _name_of(dataset)
    out = out or f"{name}.yaml"
    sizes = EMBEDDED if model.startswith("builtin:") else REAL
    raw: dict[str, Any] = {
        "name": name,
        "model": model,
        "dataset": {"path": dataset, **settings, "max_eval_rows": 200},
        "axes": {"loss_type": ["sigmoid", "ipo"], "beta": [0.01, 0.1, 0.5]},
        "train": dict(sizes["train"]),
        "lora": dict(sizes["lora"]),
        "quantization": "auto",
    }
    judged = "answer" in columns
    if judged:  # a reference answer per prompt: rank by what the models say
        raw["judge"] = {"prompts": 100, "scorers": ["builtin:verifiable"], "max_new_tokens": sizes["answer_tokens"]}
        raw["metric"], raw["mode"] = "eval_judge/score", "max"
    spec = parse_spec(raw, source=out)  # what is written is a valid spec
    header = [
        f"# python -m sweep run {out}",
        "#",
        f"# Written by `sweep init` for {model} on {dataset} ({layout} layout).",
        f"# `python -m sweep plan {out}` lists the trials; `--set key=value` overrides a field.",
    ]
    body = yaml.dump(raw, Dumper=_Dumper, sort_keys=False, width=120)
    footer = []
    if not judged:
        footer = [
            "# Trials are ranked by held-out preference accuracy, which compares within one loss family only.",
            "# To rank by what the models say, judge their generations, e.g. with a reward model:",
            "# judge:",
            "#   prompts: 100",
            "#   scorers: [{reward_model: OpenAssistant/reward-model-deberta-v3-large-v2}]",
            "# metric: eval_judge/score",
        ]
    text = "\n".join(header) + "\n" + body + ("\n".join(footer) + "\n" if footer else "")
    return Scaffold(layout, out, text, spec)


def _name_of(dataset: str) -> str:
    stem = dataset.removeprefix("builtin:").rstrip("/").split("/")[-1]
    stem = Path(stem).stem if Path(stem).suffix else stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_.-") or "sweep"


class _Dumper(yaml.SafeDumper):
    """Block mappings, one field a line; lists inline (`beta: [0.01, 0.1, 0.5]`), as specs are written."""


_Dumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)
