"""The spec's schema: every section `sweep` owns, declared once as types.

Pydantic validates a spec's YAML against these dataclasses (types strict: no `true` where a
count goes, no number where a name goes; numbers finite; ranges; choices; unknown keys
refused) and writes the JSON Schema editors use (`sweep schema`) and the field reference
in docs/spec.md. What the types cannot say (rules across fields, the trainers' own config
fields, files on disk) is checked in spec.py.

This module imports nothing else of `sweep`, so every layer can use the spec's types.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, WithJsonSchema
from pydantic.dataclasses import dataclass
from typing_extensions import TypedDict

CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True)
DEFAULT_METRIC = "eval_rewards/accuracies"
# Fields the code sets on a validated spec; a YAML file never writes them.
INTERNAL_FIELDS = ("sampled", "zipped", "source", "overrides")

Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # a whole number is taken as a float too (YAML `2` for 2.0)
Bool = Annotated[bool, Strict()]
Text = Annotated[str, Strict()]
NonEmpty = Annotated[str, Strict(), Field(min_length=1)]


def _empty_if_none(value: Any) -> Any:
    """A section written with nothing under it (`train:`) is YAML's null: the section's defaults."""
    return {} if value is None else value


def _section(cls: Any) -> Any:
    return Annotated[cls, BeforeValidator(_empty_if_none)]


def _name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", value):
        raise ValueError("must be 1-100 letters, digits, '_', '-' or '.', starting with a letter or digit")
    return value


@dataclass(config=CONFIG)
class DatasetSpec:
    path: NonEmpty = "builtin:prefs"
    """`builtin:prefs`, a local .jsonl/.json/.parquet/.csv file, a directory saved with
    `datasets.save_to_disk`, or a hub id such as `Intel/orca_dpo_pairs`."""
    train_split: NonEmpty = "train"
    """The split trials train on."""
    eval_split: NonEmpty | None = "test"
    """Named held-out split; if the source has none, `eval_fraction` of train is held out."""
    eval_fraction: Annotated[Float, Field(gt=0, lt=1)] = 0.1
    """Share of train held out where the source has no `eval_split`."""
    columns: dict[Literal["prompt", "chosen", "rejected", "system"], NonEmpty] = dataclasses.field(default_factory=dict)
    """Source column of `prompt`/`chosen`/`rejected`/`system`, e.g. orca_dpo_pairs:
    {system: system, prompt: question, chosen: chatgpt, rejected: llama2-13b-chat}."""
    format: Literal["pairs", "transcript"] = "pairs"
    """`pairs`: prompt/chosen/rejected columns, plain text or lists of {role, content} messages.
    `transcript`: whole `chosen`/`rejected` conversations sharing a prompt prefix (hh-rlhf's
    "\\n\\nHuman: ... \\n\\nAssistant: ..." text, or message lists); the shared turns become the prompt."""
    system_prompt: Text | None = None
    """A system message for every row without one of its own (a `system` column wins)."""
    chat_template: Bool = True
    """Format rows with the model's chat template: plain-text rows become a user turn and an
    assistant turn (after the system message). false: train on the raw text (models without a template)."""
    max_train_rows: Annotated[Int, Field(ge=1)] | None = None
    """Train on a seeded random subset of this many rows (null: all)."""
    max_eval_rows: Annotated[Int, Field(ge=1)] | None = None
    """Evaluate on a seeded random subset of this many held-out rows (null: all)."""
    seed: Int = 0
    """Seed of the train/eval split and of row subsampling."""


@dataclass(config=CONFIG)
class Resources:
    cpu: Annotated[Float, Field(gt=0)] = 1
    """CPUs per trial (Ray's resource request)."""
    gpu: Annotated[Float, Field(ge=0)] | None = None
    """GPUs per trial; null = 1 where the Ray cluster has GPUs, else 0. Fractions pack trials."""


@dataclass(config=CONFIG)
class Tracking:
    uri: NonEmpty | None = None
    """MLflow tracking URI; default $MLFLOW_TRACKING_URI, else sqlite at <results_dir>/mlflow.db."""
    experiment: NonEmpty | None = None
    """MLflow experiment name; default the spec's `name`."""
    retry_s: Annotated[Float, Field(gt=0)] = 600.0
    """How long a trial keeps resending metric points the tracking server cannot take (down,
    or overloaded) before it drops them; its run then says how many it dropped. Metrics are
    sent off the training thread, so a slow server never slows training."""


@dataclass(config=CONFIG)
class Search:
    method: Literal["grid", "random", "optuna"] = "grid"
    """`grid` (every combination), `random` (sample `num_samples` points) or `optuna`
    (Bayesian TPE through Ray Tune's OptunaSearch, guided by `metric`/`mode`)."""
    num_samples: Annotated[Int, Field(ge=1)] | None = None
    """grid: repeats of the whole grid (default 1); random/optuna: trials to sample (default 10).
    As in Ray Tune, grid axes mixed with sampled ones give num_samples x grid points."""


@dataclass(config=CONFIG)
class Scheduler:
    type: Literal["none", "asha", "median", "halving", "paired"] = "none"
    """`none` (every trial runs to its end), `asha` (Ray Tune's ASHAScheduler) or `median`
    (Ray Tune's MedianStoppingRule): stop trials whose held-out `metric` trails, at each eval;
    `halving`: synchronous successive halving (Ray Tune's HyperBand, one bracket holding every
    trial): each trial pauses at a rung, checkpointed, until all have reached it, then the best
    1/reduction_factor resume from their checkpoints and the rest stop. Compares every trial
    at every rung, where ASHA promotes the first to arrive: for grids of tens of points;
    `paired`: stop a trial whose judged answers are worse than the best trial's on the same
    prompts (Wilcoxon signed-rank test at `level`); needs `judge:` at every evaluation."""
    grace_period: Annotated[Int, Field(ge=1)] = 1
    """Evaluations every trial gets before it may be stopped (halving: the first rung)."""
    level: Annotated[Float, Field(gt=0, lt=1)] = 0.05
    """paired: the test's significance level; a trial whose answers are worse at this level stops."""
    reduction_factor: Annotated[Float, Field(gt=1)] = 2
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


@dataclass(config=CONFIG)
class Samples:
    prompts: Annotated[Int, Field(ge=0)] = 4
    """Held-out prompts each trial answers at its end (the same ones for every trial; 0: none).
    The base model's answers (adapter disabled) are logged beside them."""
    max_new_tokens: Annotated[Int, Field(ge=1)] = 64
    """Longest answer, in tokens."""


class Generation(TypedDict, total=False):
    """Sampling settings of the judge's generations (GenerationConfig's); default greedy."""

    __pydantic_config__ = CONFIG  # type: ignore[misc]
    do_sample: Bool
    """Sample instead of decoding greedily."""
    temperature: Annotated[Float, Field(gt=0)]
    """Softmax temperature when sampling."""
    top_p: Annotated[Float, Field(gt=0, le=1)]
    """Nucleus sampling: keep the smallest set of tokens with this much probability."""
    top_k: Annotated[Int, Field(ge=0)]
    """Keep the k likeliest tokens (0: all)."""
    repetition_penalty: Annotated[Float, Field(gt=0)]
    """Penalty on tokens already generated (1: none)."""
    num_beams: Annotated[Int, Field(ge=1)]
    """Beam search width (1: none)."""
    seed: Annotated[Int, Field(ge=0)]
    """torch's seed before generating, so sampled answers repeat."""


SCORERS_SCHEMA = {
    "type": "array",
    "items": {
        "anyOf": [
            {"type": "string"},
            {
                "type": "object",
                "properties": {
                    "builtin": {"type": "string"},
                    "function": {"type": "string"},
                    "reward_model": {"type": "string"},
                    "llm": {"type": "string"},
                    "mode": {"enum": ["pairwise", "grade"]},
                    "template": {"type": "string"},
                    "device": {"type": "string"},
                    "max_new_tokens": {"type": "integer", "minimum": 1},
                    "weight": {"type": "number"},
                    "name": {"type": "string"},
                },
                "additionalProperties": False,
            },
        ]
    },
}


@dataclass(config=CONFIG)
class Judge:
    prompts: Annotated[Int, Field(ge=0)] = 0
    """Held-out prompts each trial answers and scores (the first N of the eval split; 0: no judging)."""
    scorers: Annotated[list[Any], WithJsonSchema(SCORERS_SCHEMA)] = dataclasses.field(default_factory=list)
    """`builtin:verifiable`, `module:function` (GRPO's reward-function convention), `llm:<model>`
    (a causal LM judging answers against the base model's) or a reward model (a one-label
    sequence classifier); or {builtin|function|reward_model|llm: ..., weight, name}, an llm
    judge also mode (pairwise|grade), template, device, max_new_tokens. See llm_judge.py."""
    when: Literal["eval", "end"] = "eval"
    """`eval`: judge at every evaluation (schedulers can rank by it); `end`: at the final one only."""
    max_new_tokens: Annotated[Int, Field(ge=1)] = 32
    """Longest judged answer, in tokens."""
    batch_size: Annotated[Int, Field(ge=1)] = 32
    """Prompts generated for at once (one padded batch, KV cache)."""
    generation: _section(Generation) = dataclasses.field(default_factory=dict)  # type: ignore[valid-type]
    """Sampling settings: do_sample, temperature, top_p, top_k, repetition_penalty, num_beams,
    seed. Default greedy."""


@dataclass(config=CONFIG)
class HarnessTask:
    task: NonEmpty
    """An lm-evaluation-harness task: a name lm-eval knows (hub tasks need the hub), one defined
    in `include`'s folder, or `builtin:prefs_choice` (the builtin tasks as multiple choice)."""
    include: NonEmpty | None = None
    """A local folder of task YAMLs and their data files (lm-eval's include_path)."""
    limit: Annotated[Int, Field(ge=1)] | None = None
    """Documents evaluated, the first N (None: all)."""


@dataclass(config=CONFIG)
class Harness:
    tasks: list[HarnessTask] = dataclasses.field(default_factory=list)
    """Tasks run on each trial's policy at its end (adapter on, in memory) and once on the base
    model, logged as harness/<task>/<metric> and its difference from the base. Needs the
    `harness` extra (pip install -e '.[harness]')."""
    chat_template: Bool = False
    """Ask through the model's chat template (lm-eval's apply_chat_template)."""
    batch_size: Annotated[Int, Field(ge=1)] = 16
    """lm-eval's batch size."""
    margin: Annotated[Float, Field(ge=0)] = 0.02
    """`report` flags a trial that fell more than this below the base model on any task metric."""


AXES_SCHEMA = {
    "type": "object",
    "additionalProperties": {
        "anyOf": [
            {"type": "array", "minItems": 1},
            {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "properties": {k: {} for k in ("grid", "choice", "uniform", "loguniform", "randint", "zip")},
                "additionalProperties": False,
            },
        ]
    },
}
QUANTIZATION_SCHEMA = {"anyOf": [{"enum": ["auto", "4bit", "8bit", "none"]}, {"type": "object"}]}
CONFIG_SECTION_SCHEMA = {"type": "object"}  # `sweep schema` lists each config's fields


@dataclass(config=CONFIG, frozen=True)
class SweepSpec:
    name: Annotated[Text, AfterValidator(_name)]
    """Experiment name in MLflow and folder under `results_dir`."""
    model: NonEmpty = "builtin:tiny"
    """`builtin:tiny`, a local model directory (save_pretrained), or a hub id."""
    dataset: _section(DatasetSpec) = dataclasses.field(default_factory=DatasetSpec)  # type: ignore[valid-type]
    """The preference data and how it is read."""
    axes: Annotated[dict[Text, Any], BeforeValidator(_empty_if_none), WithJsonSchema(AXES_SCHEMA)] = dataclasses.field(
        default_factory=dict
    )
    """Swept fields: field -> [values] (grid), {choice|uniform|loguniform|randint: ...} (sampled)
    or group -> {zip: {field: values, ...}} (values that move together)."""
    sampled: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """field -> {choice: [...]} | {uniform: [lo, hi]} | {loguniform: [lo, hi]} | {randint: [lo, hi]}."""
    zipped: dict[str, dict[str, list]] = dataclasses.field(default_factory=dict)
    """group -> {field: values, ...}: values that move together (one grid dimension)."""
    search: _section(Search) = dataclasses.field(default_factory=Search)  # type: ignore[valid-type]
    """How points are chosen: grid, random or optuna."""
    train: Annotated[dict[Text, Any], BeforeValidator(_empty_if_none), WithJsonSchema(CONFIG_SECTION_SCHEMA)] = (
        dataclasses.field(default_factory=dict)
    )
    """Fixed fields of the trainer's config (DPOConfig, KTOConfig, CPOConfig, ORPOConfig), by their own names."""
    lora: Annotated[dict[Text, Any], BeforeValidator(_empty_if_none), WithJsonSchema(CONFIG_SECTION_SCHEMA)] = (
        dataclasses.field(default_factory=dict)
    )
    """Fixed fields of PEFT's LoraConfig."""
    quantization: Annotated[Any, WithJsonSchema(QUANTIZATION_SCHEMA)] = "auto"
    """auto (4-bit nf4 on a GPU, none on CPU) | 4bit | 8bit | none, or a mapping of BitsAndBytesConfig fields."""
    resources: _section(Resources) = dataclasses.field(default_factory=Resources)  # type: ignore[valid-type]
    """What each trial asks Ray for."""
    max_concurrent_trials: Annotated[Int, Field(ge=1)] | None = None
    """Trials at once; default as many as the resources allow."""
    metric: NonEmpty = DEFAULT_METRIC
    """What ranks trials: any metric a trial logs, e.g. eval_judge/score."""
    mode: Literal["max", "min"] = "max"
    """Whether a higher or a lower `metric` is better."""
    results_dir: NonEmpty = "results"
    """Where results/<name>/ (adapters, Ray's state, the sqlite store) are written."""
    tracking: _section(Tracking) = dataclasses.field(default_factory=Tracking)  # type: ignore[valid-type]
    """Where metrics are logged (MLflow)."""
    max_failures: Annotated[Int, Field(ge=0)] = 0
    """Times Ray Tune retries a failed trial (each attempt is its own MLflow run)."""
    stop_on_nonfinite: Bool = True
    """Stop a trial as FAILED ("non-finite loss") as soon as its loss or gradients are NaN/inf."""
    save: Literal["all", "best", "none"] = "all"
    """Adapters to keep: `all` (every finished trial's: `evaluate` and `promote` use them),
    `best` (only the best trial's, at the end) or `none`."""
    scheduler: _section(Scheduler) = dataclasses.field(default_factory=Scheduler)  # type: ignore[valid-type]
    """Early stopping on the held-out `metric`; stopped trials end KILLED with their last
    metrics and the tag `sweep.stopped_early`."""
    share_reference: Bool = True
    """DPO and KTO losses: compute the reference log-probs once per sweep (cached under
    <results_dir>/cache, keyed on what they depend on) instead of at every step of every trial."""
    seeds: Annotated[list[Int], Field(min_length=1)] | None = None
    """Repeat every point once per seed (`train.seed`: LoRA init, data order, dropout);
    reports then give mean, std and a 95% confidence interval per point."""
    samples: _section(Samples) = dataclasses.field(default_factory=Samples)  # type: ignore[valid-type]
    """Generations logged by every trial at its end, for side-by-side reading."""
    judge: _section(Judge) = dataclasses.field(default_factory=Judge)  # type: ignore[valid-type]
    """Judged generations: the trials' answers to held-out prompts, scored, as `eval_judge/*` metrics."""
    harness: _section(Harness) = dataclasses.field(default_factory=Harness)  # type: ignore[valid-type]
    """Benchmark regression: lm-evaluation-harness tasks on each trial's policy and the base model."""
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


SPEC = TypeAdapter(SweepSpec)
USER_FIELDS = [f.name for f in dataclasses.fields(SweepSpec) if f.name not in INTERNAL_FIELDS]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a spec file (what a person writes: the internal fields left out)."""
    schema = SPEC.json_schema()
    for name in INTERNAL_FIELDS:
        schema["properties"].pop(name)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "sweep spec"
    return schema
