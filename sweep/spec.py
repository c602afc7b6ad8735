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
import hashlib
import itertools
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import strict_yaml
from .axes import check_fields_used, resolve_axes, seeds_axis, validate_point
from .checks import (
    check_field,
    check_keys,
    check_mapping,
    check_name,
    check_type,
    config_fields,
    normalise_quantization,
    sub_dataclass,
    validate_dataset,
    validate_judge,
    validate_model,
    validate_resources,
)
from .errors import SpecError, unknown

SAVE_MODES = ("all", "best", "none")
SCHEDULERS = ("none", "asha", "median", "halving")
DEFAULT_METRIC = "eval_rewards/accuracies"
# Fields sweep sets itself for every trial; a spec setting them would be ignored or break tracking.
RESERVED_TRAIN_FIELDS = ("output_dir", "report_to", "run_name", "logging_dir", "hub_token", "push_to_hub")


@dataclass
class DatasetSpec:
    path: str = "builtin:prefs"
    """`builtin:prefs`, a local .jsonl/.json/.parquet/.csv file, a directory saved with
    `datasets.save_to_disk`, or a hub id such as `Intel/orca_dpo_pairs`."""
    train_split: str = "train"
    eval_split: str | None = "test"
    """Named held-out split; if the source has none, `eval_fraction` of train is held out."""
    eval_fraction: float = 0.1
    columns: dict[str, str] = field(default_factory=dict)
    """Source column of `prompt`/`chosen`/`rejected`/`system`, e.g. orca_dpo_pairs:
    {system: system, prompt: question, chosen: chatgpt, rejected: llama2-13b-chat}."""
    format: str = "pairs"
    """`pairs`: prompt/chosen/rejected columns, plain text or lists of {role, content} messages.
    `transcript`: whole `chosen`/`rejected` conversations sharing a prompt prefix (hh-rlhf's
    "\n\nHuman: ... \n\nAssistant: ..." text, or message lists); the shared turns become the prompt."""
    system_prompt: str | None = None
    """A system message for every row without one of its own (a `system` column wins)."""
    chat_template: bool = True
    """Format rows with the model's chat template: plain-text rows become a user turn and an
    assistant turn (after the system message). false: train on the raw text (models without a template)."""
    max_train_rows: int | None = None
    max_eval_rows: int | None = None
    seed: int = 0
    """Seed of the train/eval split and of row subsampling."""


@dataclass
class Resources:
    cpu: float = 1
    gpu: float | None = None
    """GPUs per trial; None = 1 where the Ray cluster has GPUs, else 0. Fractions pack trials."""


@dataclass
class Tracking:
    uri: str | None = None
    """MLflow tracking URI; default $MLFLOW_TRACKING_URI, else sqlite at <results_dir>/mlflow.db."""
    experiment: str | None = None
    """MLflow experiment name; default the spec's `name`."""
    retry_s: float = 600.0
    """How long a trial keeps resending metric points the tracking server cannot take (down,
    or overloaded) before it drops them; its run then says how many it dropped. Metrics are
    sent off the training thread, so a slow server never slows training."""


@dataclass
class Search:
    method: str = "grid"
    """`grid` (every combination), `random` (sample `num_samples` points) or `optuna`
    (Bayesian TPE through Ray Tune's OptunaSearch, guided by `metric`/`mode`)."""
    num_samples: int | None = None
    """grid: repeats of the whole grid (default 1); random/optuna: trials to sample (default 10).
    As in Ray Tune, grid axes mixed with sampled ones give num_samples x grid points."""


@dataclass
class Scheduler:
    type: str = "none"
    """`none` (every trial runs to its end), `asha` (Ray Tune's ASHAScheduler) or `median`
    (Ray Tune's MedianStoppingRule): stop trials whose held-out `metric` trails, at each eval;
    `halving`: synchronous successive halving (Ray Tune's HyperBand, one bracket holding every
    trial): each trial pauses at a rung, checkpointed, until all have reached it, then the best
    1/reduction_factor resume from their checkpoints and the rest stop. Compares every trial
    at every rung, where ASHA promotes the first to arrive: for grids of tens of points."""
    grace_period: int = 1
    """Evaluations every trial gets before it may be stopped (halving: the first rung)."""
    reduction_factor: float = 2
    """asha, halving: keep the top 1/reduction_factor of trials at each rung."""

    @property
    def pauses(self) -> bool:
        """Trials pause and resume, so they report a checkpoint with every evaluation."""
        return self.type == "halving"

    def halving_rungs(self, n_trials: int) -> list[tuple[int, int]]:
        """halving: (evaluations, trials that go on) at each rung, halving until one would be
        left; the arithmetic of Ray Tune's HyperBand bracket (integer evaluations, ceil)."""
        eta, rungs, n, r = self.reduction_factor, [], n_trials, self.grace_period
        for _ in range(math.floor(math.log(max(n_trials, 1)) / math.log(eta) + 1e-9)):
            n = math.ceil(n / eta)
            rungs.append((r, n))
            r = int(r * eta)
        return rungs


@dataclass
class Samples:
    prompts: int = 4
    """Held-out prompts each trial answers at its end (the same ones for every trial; 0: none).
    The base model's answers (adapter disabled) are logged beside them."""
    max_new_tokens: int = 64


@dataclass
class Judge:
    prompts: int = 0
    """Held-out prompts each trial answers and scores (the first N of the eval split; 0: no judging)."""
    scorers: list = field(default_factory=list)
    """`builtin:verifiable`, `module:function` (GRPO's reward-function convention) or a reward
    model (path or hub id of a one-label sequence classifier); or a mapping
    {builtin|function|reward_model: ..., weight: w, name: n}. See judge.py."""
    when: str = "eval"
    """`eval`: judge at every evaluation (schedulers can rank by it); `end`: at the final one only."""
    max_new_tokens: int = 32
    batch_size: int = 32
    """Prompts generated for at once (one padded batch, KV cache)."""
    generation: dict[str, Any] = field(default_factory=dict)
    """Sampling settings: do_sample, temperature, top_p, top_k, repetition_penalty, num_beams,
    seed. Default greedy."""


@dataclass(frozen=True)
class SweepSpec:
    name: str
    model: str = "builtin:tiny"
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    axes: dict[str, list] = field(default_factory=dict)
    """Grid axes: field -> values. Sampled and zipped axes live in `sampled` and `zipped`."""
    sampled: dict[str, dict[str, Any]] = field(default_factory=dict)
    """field -> {choice: [...]} | {uniform: [lo, hi]} | {loguniform: [lo, hi]} | {randint: [lo, hi]}."""
    zipped: dict[str, dict[str, list]] = field(default_factory=dict)
    """group -> {field: values, ...}: values that move together (one grid dimension)."""
    search: Search = field(default_factory=Search)
    train: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] = field(default_factory=dict)
    quantization: str | dict[str, Any] = "auto"
    resources: Resources = field(default_factory=Resources)
    max_concurrent_trials: int | None = None
    metric: str = DEFAULT_METRIC
    mode: str = "max"
    results_dir: str = "results"
    tracking: Tracking = field(default_factory=Tracking)
    max_failures: int = 0
    """Times Ray Tune retries a failed trial (each attempt is its own MLflow run)."""
    stop_on_nonfinite: bool = True
    """Stop a trial as FAILED ("non-finite loss") as soon as its loss or gradients are NaN/inf."""
    save: str = "all"
    """Adapters to keep: `all` (every finished trial's: `evaluate` and `promote` use them),
    `best` (only the best trial's, at the end) or `none`."""
    scheduler: Scheduler = field(default_factory=lambda: Scheduler())
    """Early stopping on the held-out `metric`; stopped trials end KILLED with their last
    metrics and the tag `sweep.stopped_early`."""
    share_reference: bool = True
    """DPO and KTO losses: compute the reference log-probs once per sweep (cached under
    <results_dir>/cache, keyed on what they depend on) instead of at every step of every trial."""
    seeds: list[int] | None = None
    """Repeat every point once per seed (`train.seed`: LoRA init, data order, dropout);
    reports then give mean, std and a 95% confidence interval per point."""
    samples: Samples = field(default_factory=lambda: Samples())
    """Generations logged by every trial at its end, for side-by-side reading."""
    judge: Judge = field(default_factory=lambda: Judge())
    """Judged generations: the trials' answers to held-out prompts, scored, as `eval_judge/*` metrics."""
    source: str | None = None
    """Path of the YAML file the spec came from (set by `load_spec`)."""
    overrides: tuple[str, ...] = ()
    """The `--set key=value` overrides applied to that file, in order (recorded with the spec)."""

    # ---- derived views -------------------------------------------------------------
    def points(self) -> list[dict[str, Any]]:
        """Every grid point (grid and zipped axes; sampled axes left out), in a stable order:
        the axes' order, last axis fastest."""
        dims = [[{name: v} for v in values] for name, values in self.axes.items()]
        dims += [[dict(zip(group, vals)) for vals in zip(*group.values())] for group in self.zipped.values()]
        return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*dims)]

    def axis_names(self) -> list[str]:
        """Every swept field: grid, zipped, then sampled."""
        return list(self.axes) + [f for group in self.zipped.values() for f in group] + list(self.sampled)

    def num_trials(self) -> int:
        """How many trials the sweep runs (Ray Tune's count: num_samples x grid points)."""
        if self.search.method == "optuna":
            return self.sample_count()
        return self.sample_count() * len(self.points())

    def sample_count(self) -> int:
        if self.search.num_samples is not None:
            return self.search.num_samples
        return 1 if self.search.method == "grid" else 10

    def import_paths(self) -> list[str]:
        """Where a `module:function` scorer is imported from: the spec file's folder, then the
        working directory (absolute: trials run in folders of their own)."""
        paths = [str(Path(self.source).resolve().parent)] if self.source else []
        return paths + [str(Path.cwd())]

    def results_path(self, *parts: str) -> Path:
        """An absolute path under `results_dir` (trials run in folders of their own)."""
        return Path(self.results_dir).resolve().joinpath(*parts)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        d.pop("overrides")
        return d

    def fingerprint(self) -> str:
        """Hash of everything that defines the sweep's results (used to detect a changed spec)."""
        d = self.to_dict()
        d["tracking"].pop("retry_s")  # how patiently metrics are sent changes no result
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---- loading --------------------------------------------------------------------------


def load_spec(path: str | Path, overrides: typing.Sequence[str] = ()) -> SweepSpec:
    """Read and validate a spec file, with `--set key=value` overrides. Raises SpecError on any problem."""
    from .overrides import apply_overrides

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
    check_keys(
        "",
        raw,
        [f.name for f in dataclasses.fields(SweepSpec) if f.name not in ("source", "overrides", "sampled", "zipped")],
    )
    if "name" not in raw:
        raise SpecError("name", "is required (letters, digits, '_', '-', '.')")
    check_finite("", raw)
    spec = SweepSpec(
        name=check_name(raw["name"]),
        model=check_type("model", raw.get("model", "builtin:tiny"), str),
        dataset=sub_dataclass("dataset", raw.get("dataset", {}), DatasetSpec),
        axes=check_mapping("axes", raw.get("axes", {})),
        search=sub_dataclass("search", raw.get("search", {}), Search),
        train=check_mapping("train", raw.get("train", {})),
        lora=check_mapping("lora", raw.get("lora", {})),
        quantization=raw.get("quantization", "auto"),
        resources=sub_dataclass("resources", raw.get("resources", {}), Resources),
        max_concurrent_trials=raw.get("max_concurrent_trials"),
        metric=check_type("metric", raw.get("metric", DEFAULT_METRIC), str),
        mode=raw.get("mode", "max"),
        results_dir=check_type("results_dir", raw.get("results_dir", "results"), str),
        tracking=sub_dataclass("tracking", raw.get("tracking", {}), Tracking),
        max_failures=raw.get("max_failures", 0),
        stop_on_nonfinite=check_type("stop_on_nonfinite", raw.get("stop_on_nonfinite", True), bool),
        save=raw.get("save", "all"),
        seeds=raw.get("seeds"),
        scheduler=sub_dataclass("scheduler", raw.get("scheduler", {}), Scheduler),
        share_reference=check_type("share_reference", raw.get("share_reference", True), bool),
        samples=sub_dataclass("samples", raw.get("samples", {}), Samples),
        judge=sub_dataclass("judge", raw.get("judge", {}), Judge),
        source=source,
    )
    return _validate(spec)


def _validate(spec: SweepSpec) -> SweepSpec:
    """The spec checked, with its sections' values coerced and its axes resolved (a new object)."""
    if spec.mode not in ("max", "min"):
        raise SpecError("mode", f"must be 'max' or 'min', got {spec.mode!r}")
    if spec.save not in SAVE_MODES:
        raise SpecError("save", unknown("mode", spec.save, SAVE_MODES, None))
    if not isinstance(spec.max_failures, int) or isinstance(spec.max_failures, bool) or spec.max_failures < 0:
        raise SpecError("max_failures", f"must be a whole number >= 0, got {spec.max_failures!r}")
    if spec.max_concurrent_trials is not None and (
        not isinstance(spec.max_concurrent_trials, int) or spec.max_concurrent_trials < 1
    ):
        raise SpecError("max_concurrent_trials", f"must be a positive integer, got {spec.max_concurrent_trials!r}")
    if not spec.tracking.retry_s > 0:
        raise SpecError("tracking.retry_s", f"must be > 0 seconds, got {spec.tracking.retry_s!r}")
    if spec.scheduler.type not in SCHEDULERS:
        raise SpecError("scheduler.type", unknown("scheduler", spec.scheduler.type, SCHEDULERS, None))
    if spec.scheduler.grace_period < 1 or spec.scheduler.reduction_factor <= 1:
        raise SpecError("scheduler", f"needs grace_period >= 1 and reduction_factor > 1, got {spec.scheduler}")
    if spec.scheduler.type != "none" and "no" in [spec.train.get("eval_strategy"), *spec.axes.get("eval_strategy", [])]:
        raise SpecError(
            "train.eval_strategy",
            f"scheduler {spec.scheduler.type} compares trials at their evaluations; "
            "set eval_strategy: steps (and eval_steps) or scheduler.type: none",
        )
    if spec.scheduler.type == "halving":
        from .compat import describe, differing

        if differing("ray"):  # it is built on Ray Tune's HyperBand internals (compat/halving.py)
            raise SpecError(
                "scheduler.type",
                f"halving relies on Ray Tune internals of another version: {describe(differing('ray'))}; "
                "use asha or median, or install that version",
            )
    if spec.scheduler.pauses and spec.max_concurrent_trials is not None:
        # Ray Tune counts a paused trial as live, so a limit would keep the rest from ever reaching the rung.
        raise SpecError(
            "max_concurrent_trials",
            "cannot be combined with scheduler.type: halving, whose paused "
            "trials count against it; limit concurrency with resources instead",
        )
    if spec.samples.prompts < 0 or spec.samples.max_new_tokens < 1:
        raise SpecError("samples", f"needs prompts >= 0 and max_new_tokens >= 1, got {spec.samples}")
    validate_judge(spec)
    if not spec.model.strip():
        raise SpecError("model", "must not be empty; e.g. builtin:tiny or a hub id")
    validate_model(spec.model)
    validate_dataset(spec.dataset)
    validate_resources(spec.resources)

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
