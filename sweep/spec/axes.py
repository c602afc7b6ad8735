"""The axes of a spec: grid, sampled and zipped axes, `seeds`, and the rules every point must meet."""

from __future__ import annotations

import json
from typing import Any

from ..errors import SpecError, unknown
from .checks import check_field, check_mapping, config_fields, section_of
from .families import families_with, family_fields, family_of
from .points import point_label, short
from .schema import SweepSpec

# Losses whose formula divides by or logs label_smoothing and need it > 0.
NEEDS_LABEL_SMOOTHING = ("exo_pair",)
SAMPLERS = ("choice", "uniform", "loguniform", "randint")


def resolve_axes(spec: SweepSpec) -> tuple[dict[str, list], dict[str, dict], dict[str, dict]]:
    """`axes` sorted into (grid, sampled, zipped) axes, every value checked against its field.

    beta: [0.1, 0.5]                      # grid (or {grid: [...]})
    learning_rate: {loguniform: [1e-6, 1e-4]}
    lora_alpha: {choice: [16, 32]}
    r: {randint: [4, 16]}                 # both ends included
    schedule: {zip: {max_steps: [200, 800], warmup_steps: [20, 80]}}
    """
    grid: dict[str, list] = {}
    sampled: dict[str, dict[str, Any]] = {}
    zipped_axes: dict[str, dict[str, list]] = {}
    seen: dict[str, str] = {}
    for name, value in spec.axes.items():
        if isinstance(value, dict) and list(value) == ["zip"] and section_of(name) is None:
            group = check_mapping(f"axes.{name}.zip", value["zip"])
            if not group:
                raise SpecError(f"axes.{name}.zip", "needs at least one field: values")
            lengths = {f: len(v) if isinstance(v, list) else -1 for f, v in group.items()}
            if len(set(lengths.values())) != 1 or -1 in lengths.values() or 0 in lengths.values():
                raise SpecError(f"axes.{name}.zip", f"needs non-empty lists of equal length, got lengths {lengths}")
            zipped = {f: _grid_values(spec, f"axes.{name}.zip.{f}", f, v, seen, unique=False) for f, v in group.items()}
            columns = [json.dumps(col, sort_keys=True, default=str) for col in zip(*zipped.values())]
            if len(set(columns)) != len(columns):
                raise SpecError(f"axes.{name}.zip", "has two identical columns (the same values for every field)")
            zipped_axes[name] = zipped
            continue
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("grid", *SAMPLERS):
            kind, args = next(iter(value.items()))
        elif isinstance(value, dict):
            raise SpecError(
                f"axes.{name}",
                f"must be a list of values or one of {{{', '.join(('grid', *SAMPLERS, 'zip'))}: ...}}, got {value!r}",
            )
        else:
            kind, args = "grid", value
        if kind == "grid":
            grid[name] = _grid_values(spec, f"axes.{name}", name, args, seen)
        elif kind == "choice":
            sampled[name] = {"choice": _grid_values(spec, f"axes.{name}.choice", name, args, seen)}
        else:
            sampled[name] = {kind: _range(spec, f"axes.{name}.{kind}", name, kind, args, seen)}
    if sampled and spec.search.method == "grid":
        first = next(iter(sampled))
        raise SpecError(
            f"axes.{first}", "is sampled: set search.method to random or optuna (grid needs lists of values)"
        )
    if spec.search.method == "optuna" and zipped_axes:
        raise SpecError(
            f"axes.{next(iter(zipped_axes))}", "zipped axes work with search.method grid or random, not optuna"
        )
    return grid, sampled, zipped_axes


def _axis_section(spec: SweepSpec, where: str, name: str, seen: dict[str, str]) -> str:
    section = section_of(name)
    if section is None:
        all_fields = [n for fields in config_fields().values() for n in fields]
        raise SpecError(
            where, unknown("axis", name, all_fields, "a field of DPOConfig, LoraConfig or BitsAndBytesConfig")
        )
    fixed = spec.quantization if section == "quantization" else getattr(spec, section)
    if name in fixed:
        raise SpecError(where, f"is also set in `{section}`; set it in one place only")
    if name in seen:
        raise SpecError(where, f"is swept twice (also at {seen[name]})")
    seen[name] = where
    return section


def _grid_values(
    spec: SweepSpec, where: str, name: str, values: Any, seen: dict[str, str], unique: bool = True
) -> list:
    section = _axis_section(spec, where, name, seen)
    if not isinstance(values, list) or not values:
        raise SpecError(where, f"must be a non-empty list of values, got {values!r}")
    checked = [check_field(f"{where}[{i}]", section, name, v) for i, v in enumerate(values)]
    if unique and len({json.dumps(v, sort_keys=True, default=str) for v in checked}) != len(checked):
        raise SpecError(where, "has duplicate values")
    return checked


def _range(spec: SweepSpec, where: str, name: str, kind: str, bounds: Any, seen: dict[str, str]) -> list:
    section = _axis_section(spec, where, name, seen)
    if not (isinstance(bounds, list) and len(bounds) == 2):
        raise SpecError(where, f"needs [low, high], got {bounds!r}")
    low, high = (check_field(f"{where}[{i}]", section, name, b) for i, b in enumerate(bounds))
    low, high = (float(low), float(high)) if kind != "randint" else (low, high)
    if kind == "randint" and not all(isinstance(b, int) and not isinstance(b, bool) for b in (low, high)):
        raise SpecError(where, f"needs whole numbers, got {bounds!r}")
    if not low < high:
        raise SpecError(where, f"needs low < high, got {bounds!r}")
    if kind == "loguniform" and low <= 0:
        raise SpecError(where, f"needs low > 0 for a log scale, got {bounds!r}")
    return [low, high]


def validate_point(spec: SweepSpec, point: dict[str, Any]) -> None:
    train = resolved_section(spec, "train", point)
    where = point_label(point) or "train"
    losses = train.get("loss_type", ["sigmoid"])
    losses = [losses] if isinstance(losses, str) else losses
    family = family_of(losses)
    for name, value in point.items():  # a swept field must mean something at every point
        applies = name == "loss_type" or name in family_fields(family.name)
        if section_of(name) == "train" and value is not None and not applies:
            raise SpecError(
                f"axes.{name}",
                f"does not apply to loss_type {short(losses)} (at {where}); it is a field of {_families_text(name)}",
            )
    steps, epochs = train.get("max_steps", -1), train.get("num_train_epochs", 3.0)
    if steps == 0 or (steps < 0 and not epochs > 0):
        raise SpecError("train.max_steps", f"must be > 0 (or -1 with num_train_epochs > 0), got {steps}")
    if "label_smoothing" in train and not 0 <= train["label_smoothing"] < 0.5:
        raise SpecError("train.label_smoothing", f"must be in [0, 0.5), got {train['label_smoothing']}")
    if family.name == "kto" and train.get("per_device_train_batch_size", 8) < 2:
        raise SpecError(
            "train.per_device_train_batch_size", f"KTO needs >= 2 (its KL term pairs rows of a batch) (at {where})"
        )
    if family.name != "dpo":
        return
    weights = train.get("loss_weights")
    if weights is not None and len(weights) != len(losses):
        raise SpecError(
            "train.loss_weights", f"has {len(weights)} weights for {len(losses)} loss types {losses} (at {where})"
        )
    if any(lt in NEEDS_LABEL_SMOOTHING for lt in losses) and not train.get("label_smoothing", 0) > 0:
        raise SpecError("train.label_smoothing", f"must be > 0 for loss_type {losses} (at {where})")


def _families_text(field_name: str) -> str:
    return "; ".join(
        f"{f.config.split(':')[1]} (loss types {', '.join(f.loss_types[:4])}{'...' if len(f.loss_types) > 4 else ''})"
        for f in families_with(field_name)
    )


def check_fields_used(spec: SweepSpec) -> None:
    """A fixed `train` field that no trial's loss family has would be silently ignored: refuse it."""
    losses = [resolved_section(spec, "train", p).get("loss_type") for p in spec.points()]
    losses += spec.sampled.get("loss_type", {}).get("choice", [])
    used = {family_of(lt).name for lt in losses}
    for name in spec.train:
        if name != "loss_type" and not any(name in family_fields(f) for f in used):
            raise SpecError(
                f"train.{name}", f"is used by no trial of this sweep: it is a field of {_families_text(name)}"
            )


def resolved_section(spec: SweepSpec, section: str, point: dict[str, Any]) -> dict[str, Any]:
    """The fixed values of one config section with the point's axis values on top."""
    base = dict(spec.quantization if section == "quantization" else getattr(spec, section))
    base.update({k: v for k, v in point.items() if section_of(k) == section})
    if section == "quantization":
        base.pop("mode", None)
    return base


def seeds_axis(spec: SweepSpec) -> dict[str, list]:
    """`seeds: [0, 1, 2]` as the axes with a grid axis over `train.seed`, kept last so repeats sit together."""
    seeds = spec.seeds
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise SpecError("seeds", f"must be a non-empty list of whole numbers, e.g. [0, 1, 2]; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise SpecError("seeds", "has duplicate values")
    if "seed" in spec.train or "seed" in spec.axes:
        raise SpecError("seeds", "repeats every point over train.seed: do not also set `seed` in train or axes")
    return {**spec.axes, "seed": list(seeds)}
