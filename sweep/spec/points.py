"""Points of a sweep: one value per swept field. Their labels (MLflow run names), their stable
ids (a trial's id in every run of the sweep), and a Ray Tune trial's config as a point."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .schema import SweepSpec


def point_of_config(config: dict[str, Any], spec: SweepSpec) -> dict[str, Any]:
    """A Ray Tune trial's config as the spec's point, in the spec's axis order (a zipped group
    arrives as one dict of its fields)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat.update(value if key in spec.zipped else {key: value})
    return {name: flat[name] for name in spec.axis_names()}


def point_label(point: dict[str, Any]) -> str:
    """Human-readable name of a point, e.g. `loss_type=ipo,beta=0.1` (MLflow run name); unset (null) values left out."""
    return ",".join(f"{k}={short(v)}" for k, v in point.items() if v is not None)


def point_id(point: dict[str, Any]) -> str:
    """Stable id of a point from its values: the same point gets the same id in every run."""
    return hashlib.sha256(json.dumps(point, sort_keys=True, default=str).encode()).hexdigest()[:10]


def short(v: Any) -> str:
    if isinstance(v, list):
        return "+".join(short(x) for x in v)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def describe_axis(kind_args: dict[str, Any]) -> str:
    kind, args = next(iter(kind_args.items()))
    if kind == "choice":
        return "choice of " + ", ".join(map(str, args))
    lo, hi = args
    return f"{kind} in [{lo:g}, {hi:g}]"
