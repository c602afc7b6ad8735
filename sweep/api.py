"""The Python API: run a sweep and read it back as pandas, from a notebook or a script.

    import sweep

    outcome = sweep.run("search_spaces/beta_grid.yaml", overrides=["train.max_steps=20"])
    trials = sweep.trials("beta_grid")      # one row per trial: the columns `export` writes
    steps = sweep.history("beta_grid")      # per-step metrics, long form
    best = sweep.best("beta_grid")          # the best trial: point, metrics, adapter
    sweep.importance("beta_grid")           # which swept axis moved the metric

Every reader takes a sweep's name (the spec's `name`) and, like the CLI, reads the store at
`tracking_uri`, else $MLFLOW_TRACKING_URI, else `<results_dir>/mlflow.db`. The CLI is a thin
layer over these functions, so both give the same numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .driver.options import RunOptions
from .errors import SpecError
from .record import dataset_inputs, logged_models, store, tracking
from .record.store import Sweep
from .reports import answers, tables
from .reports import status as status_report
from .reports.html import write_html
from .reports.importance import axis_importance
from .reports.statistics import objectives_for, pareto_front
from .runtime import cluster
from .runtime.startup import QUIET_ENV, restored_env
from .spec.checks import unusable_inputs
from .spec.load import SweepSpec, load_spec, needs_no_hub, parse_spec, read_spec_file
from .spec.overrides import apply_overrides
from .trial.finished import VERIFIED, load_trial, verify
from .trial.finished import promote as merge_and_log

SpecLike = str | os.PathLike | dict | SweepSpec


def load(spec: SpecLike, overrides: Sequence[str] = ()) -> SweepSpec:
    """A validated spec from a YAML path, a mapping (as the YAML would hold) or a spec object,
    with `key=value` overrides applied (`train.max_steps=5`, `axes.beta=[0.1,0.5]`)."""
    if isinstance(spec, SweepSpec):
        if overrides:
            raise SpecError("--set", "overrides apply to a YAML path or a mapping, not to a spec object")
        return spec
    if isinstance(spec, dict):
        return parse_spec(apply_overrides(spec, overrides))
    return load_spec(spec, overrides)


def run(
    spec: SpecLike,
    overrides: Sequence[str] = (),
    *,
    address: str | None = None,
    fresh: bool = False,
    retry_failed: bool = False,
    verbose: bool = False,
    progress_interval: float = 30.0,
    log=print,
):
    """Run (or resume) a sweep and return its `SweepOutcome`: `.summary` (the trials frame),
    `.sweep` (where it lives in MLflow), `.status`, `.exit_code`, `.n_failed`.

    Bad input raises `SpecError` before Ray starts. Environment variables set for the run
    (offline hub for the embedded default, Ray's auth mode) are restored afterwards; Ray is
    down when it returns."""
    offline = needs_no_hub(_raw(spec, overrides))
    with restored_env("HF_HUB_OFFLINE", "RAY_AUTH_MODE", "TUNE_PRINT_ALL_TRIAL_ERRORS", *QUIET_ENV):
        if offline:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing to fetch: never reach for a hub
        for name, value in QUIET_ENV.items():
            os.environ.setdefault(name, value)
        if not verbose:  # a failed trial is one line of the live view; Ray's whole text goes to its log
            os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
        options = RunOptions(address, fresh, retry_failed, verbose, progress_interval)
        cluster.set_auth_mode(options.joins)
        try:
            resolved = load(spec, overrides)
            for where, problem in unusable_inputs(resolved)[:1]:  # one line, before Ray starts
                raise SpecError(where, problem)
            if not options.joins:
                # A local Ray comes up, and its workers import the stack, while this process
                # imports Ray Tune and the rest of what it needs (not while it loads the data:
                # orchestrate.run_sweep).
                cluster.start(
                    None, verbose, quantized=cluster.may_have_cuda(), warm_workers=cluster.trials_at_once(resolved)
                )
            from .driver.orchestrate import run_sweep

            return run_sweep(resolved, options, log)
        finally:
            cluster.stop()


def open_sweep(name: str | Sweep, tracking_uri: str | None = None, results_dir: str | Path = "results") -> Sweep:
    """The latest sweep called `name` in the store (raises `LookupError` naming the sweeps there)."""
    if isinstance(name, Sweep):
        return name
    return store.find_sweep(store_uri(tracking_uri, results_dir), name)


def trials(name: str | Sweep, tracking_uri: str | None = None, results_dir: str | Path = "results") -> pd.DataFrame:
    """One row per trial, best first: ids, status, swept values, every final metric, the best
    of the ranking metrics over each trial's history, steps, runtime, error (`export`'s CSV)."""
    return tables.trials_frame(open_sweep(name, tracking_uri, results_dir), all_metrics=True)


def history(
    name: str | Sweep,
    metrics: Sequence[str] | None = None,
    tracking_uri: str | None = None,
    results_dir: str | Path = "results",
) -> pd.DataFrame:
    """Per-step metrics in long form: one row per (trial, metric, step) (`export --history`)."""
    return tables.history_frame(open_sweep(name, tracking_uri, results_dir), metrics=list(metrics) if metrics else None)


def samples(
    name: str | Sweep, top: int = 3, tracking_uri: str | None = None, results_dir: str | Path = "results"
) -> pd.DataFrame:
    """The top trials' generations beside the base model's, one row per held-out prompt."""
    return answers.samples_frame(open_sweep(name, tracking_uri, results_dir), top=top)


def judgements(
    name: str | Sweep, trial: str | None = None, tracking_uri: str | None = None, results_dir: str | Path = "results"
) -> pd.DataFrame:
    """A trial's (default: the best's) last judged evaluation, one row per prompt: the prompt,
    the base model's answer, the trial's answer, every score of both, totals, win/tie/loss."""
    sweep = open_sweep(name, tracking_uri, results_dir)
    table = answers.judged_frame(sweep, trial)
    if table is None:
        raise LookupError(f"sweep {sweep.name} has no judged generations (its spec has no `judge:` section)")
    return table


def datasets(name: str | Sweep, tracking_uri: str | None = None, results_dir: str | Path = "results") -> pd.DataFrame:
    """The data the sweep ran on, one row per split (context, name, digest, source, rows), as its
    parent run records it: what the MLflow UI's Dataset column shows."""
    return dataset_inputs.frame(open_sweep(name, tracking_uri, results_dir).parent)


def models(name: str | Sweep, tracking_uri: str | None = None, results_dir: str | Path = "results") -> pd.DataFrame:
    """The sweep's MLflow logged models (kept adapters, promoted merged models), best first, each
    with its ranking metric and registered versions: what the MLflow UI's Models tab lists."""
    sweep = open_sweep(name, tracking_uri, results_dir)
    ranked = tables.trials_frame(sweep, best=False)["run_id"]
    return logged_models.frame(tracking.client(sweep.uri), sweep, list(ranked))


def evaluate(
    name: str | Sweep, trial: str | None = None, tracking_uri: str | None = None, results_dir: str | Path = "results"
) -> pd.DataFrame:
    """Recompute each finished trial's (or `trial`'s) held-out reward accuracy and margin from its
    saved adapter and the base model, log them to its run as `verified_*`, and return one row per
    trial: recomputed, logged, and their absolute difference, best trial first."""
    sweep = open_sweep(name, tracking_uri, results_dir)
    if trial:
        runs = [tables.find_trial(sweep, trial)]
    else:  # the finished trials, best first, from one query (not one find_trial per trial)
        by_id = {r.info.run_id: r for r in sweep.runs()}
        df = tables.trials_frame(sweep, best=False)
        runs = [by_id[rid] for rid in df.loc[df["status"] == "FINISHED", "run_id"]]
    rows = []
    for run in runs:
        result = verify(sweep.uri, run)
        row = {"trial": run.info.run_name}
        for key in VERIFIED:
            row[f"{key} (recomputed)"] = result[key]
            if f"logged_{key}" in result:
                row[f"{key} (logged)"] = result[f"logged_{key}"]
                row[f"|diff| {key.split('/')[-1]}"] = abs(result[key] - result[f"logged_{key}"])
        rows.append(row)
    return pd.DataFrame(rows)


def promote(
    name: str | Sweep,
    out: str | Path,
    trial: str | None = None,
    register: str | None = None,
    tracking_uri: str | None = None,
    results_dir: str | Path = "results",
    log=print,
) -> Path:
    """Merge the best (or `trial`'s) adapter into its base model; save it to `out` (a plain
    `from_pretrained` folder) and as an MLflow transformers model of the trial's run; `register`:
    also a version of that registered model, alias `best` (`models:/NAME@best`)."""
    if register is not None:
        logged_models.registered_name(register)
    sweep = open_sweep(name, tracking_uri, results_dir)
    run = tables.find_trial(sweep, trial)
    return merge_and_log(sweep.uri, run, Path(out), sweep.name, register=register, log=log)


@dataclass
class Best:
    """The best finished trial of a sweep by its ranking metric."""

    trial: str
    """Its run name: the swept values, e.g. `loss_type=ipo,beta=0.1`."""
    run_id: str
    point: dict[str, Any]
    metrics: dict[str, float]
    tracking_uri: str
    has_adapter: bool
    adapter_uri: str | None
    """The MLflow URI of its LoRA adapter, a logged model (`models:/<id>`); None without one."""
    params: dict[str, str] = field(repr=False, default_factory=dict)

    def download_adapter(self, dst: str | Path | None = None) -> Path:
        """The adapter's folder on this machine (PEFT's `PeftModel.from_pretrained` loads it)."""
        run = tracking.client(self.tracking_uri).get_run(self.run_id)
        return logged_models.download_adapter(self.tracking_uri, run, dst)

    def load(self):
        """The base model with this adapter on top, and its tokenizer: `(model, tokenizer)`."""
        loaded = load_trial(self.tracking_uri, tracking.client(self.tracking_uri).get_run(self.run_id))
        return loaded.model, loaded.tokenizer


def best(
    name: str | Sweep, metric: str | None = None, tracking_uri: str | None = None, results_dir: str | Path = "results"
) -> Best:
    """The best finished trial by `metric` (default: the sweep's ranking metric and mode)."""
    sweep = open_sweep(name, tracking_uri, results_dir).ranked_by(metric)
    df = tables.finished(tables.rank(trials(sweep), sweep.metric, sweep.mode), sweep.metric)
    if df.empty:
        raise LookupError(f"sweep {sweep.name} has no finished trial with {sweep.metric}")
    row = df.iloc[0]
    c = tracking.client(sweep.uri)
    run = c.get_run(row["run_id"])
    adapter_uri = logged_models.adapter_uri(c, run)
    point = {a: row[a] for a in sweep.axes if a in row}
    return Best(
        trial=run.info.run_name,
        run_id=run.info.run_id,
        point=point,
        metrics=dict(run.data.metrics),
        tracking_uri=sweep.uri,
        has_adapter=adapter_uri is not None,
        adapter_uri=adapter_uri,
        params=dict(run.data.params),
    )


def importance(
    name: str | Sweep, metric: str | None = None, tracking_uri: str | None = None, results_dir: str | Path = "results"
):
    """How much each swept axis moved the ranking metric over the finished trials (Optuna's
    fANOVA importance, summing to 1), as an `analysis.Importance` (`.table`, `.note`)."""
    sweep = open_sweep(name, tracking_uri, results_dir).ranked_by(metric)
    return axis_importance(trials(sweep), sweep.axes, sweep.metric, sweep.mode)


def pareto(
    name: str | Sweep,
    objectives: dict[str, str] | None = None,
    tracking_uri: str | None = None,
    results_dir: str | Path = "results",
) -> pd.DataFrame:
    """The finished trials no other finished trial beats on every objective ({metric: "max" or
    "min"}; default: the ranking metric and, where judged, `eval_judge/length`, shorter better),
    ranked by the sweep's metric: the report's Pareto front."""
    sweep = open_sweep(name, tracking_uri, results_dir)
    df = tables.rank(trials(sweep), sweep.metric, sweep.mode)
    return pareto_front(df, objectives or objectives_for(df, sweep.metric, sweep.mode))


def findings(
    name: str | Sweep,
    metric: str | None = None,
    objectives: dict[str, str] | None = None,
    tracking_uri: str | None = None,
    results_dir: str | Path = "results",
) -> tables.Findings:
    """Everything a report says about a sweep (ranked by `metric`; `objectives`: the Pareto
    front's, {metric: "max" or "min"}), computed once for `report`, `plots` and `html` to show.
    A metric or objective no trial logged raises `SpecError` naming the metrics there."""
    return tables.findings(open_sweep(name, tracking_uri, results_dir), metric, objectives)


def report(
    name: str | Sweep,
    metric: str | None = None,
    fmt: str = "table",
    tracking_uri: str | None = None,
    results_dir: str | Path = "results",
    found: tables.Findings | None = None,
) -> str:
    """The report `python -m sweep report` prints (`fmt`: table, markdown or json)."""
    sweep = found.sweep if found is not None else open_sweep(name, tracking_uri, results_dir)
    return tables.report(sweep, metric=metric, fmt=fmt, found=found)


def plots(found: tables.Findings, out_dir: str | Path) -> list[Path]:
    """The report's figures (metric vs beta and learning rate, parallel coordinates, metric by
    axis, the Pareto front, training curves) written as PNGs under `out_dir`."""
    from .reports.plots import sweep_figures

    axes, objectives = found.sweep.axes, found.objectives
    return sweep_figures(found.sweep, found.trials, found.metric, Path(out_dir), axes=axes, objectives=objectives)


def html(found: tables.Findings, path: str | Path, top: int = 3) -> Path:
    """The report as one self-contained HTML page (figures inline), also attached to the parent run."""
    return write_html(found.sweep, Path(path), top=top, found=found)


def compare(
    name_a: str | Sweep,
    name_b: str | Sweep,
    metric: str | None = None,
    top: int = 3,
    tracking_uri: str | None = None,
    results_dir: str | Path = "results",
) -> pd.DataFrame:
    """The `top` configurations of two sweeps side by side (rows: sweep, rank), by `metric`
    (default: the first sweep's)."""
    a, b = (open_sweep(n, tracking_uri, results_dir) for n in (name_a, name_b))
    return tables.compare(a, b, metric=metric, top=top)


def logs(name: str | Sweep, trial: str, tracking_uri: str | None = None, results_dir: str | Path = "results") -> str:
    """A trial's whole stdout and stderr (by run name, trial id or run id): the run's artifact once
    it ended, the live file while it runs."""
    return store.trial_log(open_sweep(name, tracking_uri, results_dir), trial)


def status(name: str | Sweep, tracking_uri: str | None = None, results_dir: str | Path = "results") -> str:
    """Where a sweep stands (counts, best so far, running trials' progress), from the store alone."""
    return status_report.status(open_sweep(name, tracking_uri, results_dir))


def list_sweeps(tracking_uri: str | None = None, results_dir: str | Path = "results") -> pd.DataFrame:
    """Every sweep in the store, newest first, with trial counts by status."""
    return pd.DataFrame(store.list_sweeps(store_uri(tracking_uri, results_dir)))


def store_uri(tracking_uri: str | None = None, results_dir: str | Path = "results") -> str:
    """The tracking URI readers use; refuses to invent an empty default sqlite store."""
    uri = tracking.resolve_tracking_uri(tracking_uri, results_dir)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise SpecError(
            "tracking", f"no MLflow store at {uri.removeprefix('sqlite:///')}; run a sweep first or pass --tracking-uri"
        )
    return uri


def _raw(spec: SpecLike, overrides: Sequence[str]) -> Any:
    """The spec as plain data, overrides applied, read before anything imports
    huggingface_hub (which reads HF_HUB_OFFLINE once)."""
    if isinstance(spec, SweepSpec):
        return {"model": spec.model, "dataset": {"path": spec.dataset.path}}
    return apply_overrides(spec if isinstance(spec, dict) else read_spec_file(spec), overrides)
