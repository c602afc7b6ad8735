"""The sweep spec: one YAML file, the single source of truth for a sweep.

    name: beta_grid                  # experiment name in MLflow, folder under results/
    model: builtin:tiny              # builtin:tiny, a local directory, or a hub id
    dataset: {path: builtin:prefs}   # see DatasetSpec
    axes:                            # what is swept (a grid: every combination)
      loss_type: [sigmoid, ipo]
      beta: [0.01, 0.1, 0.3, 0.5]
    train: {learning_rate: 5.0e-4, max_steps: 60}   # any DPOConfig field
    lora: {r: 8, lora_alpha: 16}                     # any LoraConfig field
    quantization: auto               # auto | 4bit | 8bit | none, or BitsAndBytesConfig fields
    resources: {cpu: 1}
    metric: eval_rewards/accuracies  # what ranks trials
    mode: max

Every field of `DPOConfig`, `LoraConfig` and `BitsAndBytesConfig` is settable by its own
name: fixed values in their section, swept values under `axes` (the three configs share no
field name, so an axis name says which config it belongs to). The whole spec is validated,
every point of the grid included, before anything starts; a problem raises `SpecError`
naming the field and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import SpecError, unknown
from . import strict_yaml
from .axes import check_fields_used, resolve_axes, seeds_axis, validate_point
from .checks import (
    check_field,
    check_keys,
    config_fields,
    normalise_quantization,
    validate_dataset,
    validate_harness,
    validate_judge,
    validate_model,
)
from .locations import choices_at, fields_at
from .overrides import apply_overrides
from .schema import SPEC, USER_FIELDS, DatasetSpec, SweepSpec

# Fields sweep sets itself for every trial; a spec setting them would be ignored or break tracking.
RESERVED_TRAIN_FIELDS = ("output_dir", "report_to", "run_name", "logging_dir", "hub_token", "push_to_hub")


# ---- loading --------------------------------------------------------------------------


def load_spec(path: str | Path, overrides: typing.Sequence[str] = ()) -> SweepSpec:
    """Read and validate a spec file, with `--set key=value` overrides. Raises SpecError on any problem."""
    spec = parse_spec(apply_overrides(read_spec_file(path), overrides), source=str(path))
    return dataclasses.replace(spec, overrides=tuple(overrides))


def read_spec_file(path: str | Path) -> Any:
    """A spec file's YAML, not validated yet (`run` reads it first to set HF_HUB_OFFLINE before
    anything imports huggingface_hub, which a first validation on a machine does)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError("spec", f"file not found: {path}")
    if path.stat().st_size > strict_yaml.MAX_BYTES:
        raise SpecError("spec", f"{path} is larger than {strict_yaml.MAX_BYTES >> 20} MB; a spec is a page of YAML")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError("spec", f"{path} is not UTF-8 text") from None
    return strict_yaml.load(text)


def check_finite(where: str, value: Any) -> None:
    """No number anywhere in a spec is NaN or infinite (YAML's `.nan`, `.inf`): no field means
    one, and each would be taken as a number (Ray waits forever for `cpu: .inf`)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(where or "spec", f"must be a finite number, got {value}")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        check_finite(f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key), item)


def needs_no_hub(raw: Any) -> bool:
    """Whether a spec's YAML (read, maybe not valid) trains a builtin model on a builtin dataset."""
    if not isinstance(raw, dict):
        return False
    data = raw.get("dataset")
    model = raw.get("model", SweepSpec.model)
    dataset = data.get("path", DatasetSpec.path) if isinstance(data, dict) else DatasetSpec.path
    return all(isinstance(name, str) and name.startswith("builtin:") for name in (model, dataset))


def parse_spec(raw: Any, source: str | None = None) -> SweepSpec:
    """Build a validated SweepSpec from plain data (a parsed YAML mapping); `source`: the file
    it came from (scorer modules are imported from beside it)."""
    if not isinstance(raw, dict):
        raise SpecError("spec", "must be a YAML mapping with at least `name`")
    check_keys("", raw, USER_FIELDS)
    if "name" not in raw:
        raise SpecError("name", "is required (letters, digits, '_', '-', '.')")
    check_finite("", raw)
    try:
        spec = SPEC.validate_python({**raw, "source": source})
    except ValidationError as e:
        raise schema_error(e) from None
    return _validate(spec)


# pydantic's wording where it names its own types rather than what a spec holds
PLAIN_MESSAGES = {
    "dict_type": "must be a mapping of field: value",
    "dataclass_type": "must be a mapping of field: value",
    "string_too_short": "must not be empty",
    "too_short": "must be a non-empty list",
}


def schema_error(e: ValidationError) -> SpecError:
    """The first problem pydantic found, as the one line a user reads: the field's path, what
    is wrong, what is allowed (with a did-you-mean for a misspelt name or choice)."""
    error = e.errors(include_url=False)[0]
    loc = [part for part in error["loc"] if part != "[key]"]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "spec"
    got = error.get("input")
    kind = error["type"]
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return SpecError(where, unknown("field", loc[-1], fields_at(error["loc"][:-1]), None))
    if kind == "literal_error":
        return SpecError(where, unknown("value", got, choices_at(error["loc"]), None))
    if kind == "missing":
        return SpecError(where, "is required")
    message = PLAIN_MESSAGES.get(kind) or error["msg"].removeprefix("Value error, ").replace(
        "Input should be", "must be"
    )
    return SpecError(where, f"{message}, got {type(got).__name__} {got!r}")


def _validate(spec: SweepSpec) -> SweepSpec:
    """The spec checked, with its sections' values coerced and its axes resolved (a new object)."""
    if spec.scheduler.type != "none" and "no" in [spec.train.get("eval_strategy"), *spec.axes.get("eval_strategy", [])]:
        raise SpecError(
            "train.eval_strategy",
            f"scheduler {spec.scheduler.type} compares trials at their evaluations; "
            "set eval_strategy: steps (and eval_steps) or scheduler.type: none",
        )
    if spec.scheduler.type == "halving":
        from ..compat import describe, differing

        if differing("ray"):  # it is built on Ray Tune's HyperBand internals (compat/halving.py)
            raise SpecError(
                "scheduler.type",
                f"halving relies on Ray Tune internals of another version: {describe(differing('ray'))}; "
                "use asha or median, or install that version",
            )
    if spec.scheduler.type == "paired" and (not spec.judge.prompts or spec.judge.when != "eval"):
        raise SpecError(
            "scheduler.type",
            "paired compares trials' judged answers prompt by prompt at every evaluation: set judge.prompts "
            "and judge.scorers, judged at every evaluation (judge.when: eval), or choose asha or median",
        )
    if spec.scheduler.pauses and spec.max_concurrent_trials is not None:
        # Ray Tune counts a paused trial as live, so a limit would keep the rest from ever reaching the rung.
        raise SpecError(
            "max_concurrent_trials",
            "cannot be combined with scheduler.type: halving, whose paused "
            "trials count against it; limit concurrency with resources instead",
        )
    validate_judge(spec)
    validate_harness(spec)
    if not spec.model.strip():
        raise SpecError("model", "must not be empty; e.g. builtin:tiny or a hub id")
    validate_model(spec.model)
    validate_dataset(spec.dataset)

    # Fixed config sections: names must exist in their config, values must have its types.
    catalogue = config_fields()
    sections = {}
    for section in ("train", "lora"):
        values = getattr(spec, section)
        check_keys(section, values, list(catalogue[section]))
        sections[section] = {name: check_field(f"{section}.{name}", section, name, v) for name, v in values.items()}
    for name in RESERVED_TRAIN_FIELDS:
        if name in spec.train or name in spec.axes:
            raise SpecError(f"train.{name}", "is set by sweep for every trial and cannot be set in a spec")
    checked = dataclasses.replace(spec, **sections, quantization=normalise_quantization(spec.quantization))
    if spec.seeds is not None:
        checked = dataclasses.replace(checked, axes=seeds_axis(checked))
    grid, sampled, zipped = resolve_axes(checked)
    resolved = dataclasses.replace(checked, axes=grid, sampled=sampled, zipped=zipped)

    # Every point must make a valid configuration (conditional fields, cross-field rules).
    for point in resolved.points():
        validate_point(resolved, point)
    check_fields_used(resolved)
    return resolved
