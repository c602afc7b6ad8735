"""MLflow tracking: one experiment per spec name, one parent run per sweep, one child run per trial.

Everything goes through `MlflowClient` with explicit run ids (never the fluent "active run"),
so a trial running in a reused Ray worker, or a driver thread, cannot end someone else's run.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import secrets

# Parameter names that look like credentials never reach MLflow (or exports).
POINT = "trial.point"  # a trial's swept values as JSON: read back typed (`swept_values`)
BETA = "trial.beta"  # the beta its trainer config was built with (TRL's default where the spec sets none)
SWEPT_PREFIX = "sweep."  # swept values are params `sweep.<field>`: never clash with other params

TAG_SWEEP = "sweep.name"
TAG_KIND = "sweep.kind"  # "parent" | "trial"
TAG_TRIAL_ID = "sweep.trial_id"
TAG_POINT = "sweep.point"
TAG_LOSS = "sweep.loss_type"
TAG_ERROR = "sweep.error"
TAG_FINGERPRINT = "sweep.spec_fingerprint"
TAG_LOG_PATH = "sweep.log_path"
TAG_STOPPED_EARLY = "sweep.stopped_early"  # KILLED by the early-stopping scheduler, not interrupted
TAG_METRICS_DROPPED = "sweep.metrics_dropped"  # points the tracking server could not take in time
TAG_NOTE = "mlflow.note.content"  # a run's description in MLflow's UI (markdown)
# MLflow 3's UI opens an experiment of this kind in its model-training view (runs, params,
# metrics), not the GenAI view (traces, an assistant panel) it infers for an untagged one.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")

# Artifacts of a trial's run (and the parent's summary)
ADAPTER = "adapter"  # the LoRA adapter folder (save: all / best)
TRIAL_LOG = "trial.log"  # the trial's stdout/stderr
TRIAL_CONFIG = "trial_config.json"  # its resolved trainer, LoRA and quantization configs
SAMPLES = "samples.json"  # the MLflow table of its generations
SUMMARY = "summary.csv"  # one row per trial, on the parent run


def default_tracking_uri(results_dir: str | Path) -> str:
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(spec_uri: str | None, results_dir: str | Path) -> str:
    """Spec's `tracking.uri`, else $MLFLOW_TRACKING_URI, else sqlite at <results_dir>/mlflow.db.

    Relative sqlite paths are made absolute: Ray trials run in other working directories.
    """
    uri = spec_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(results_dir)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    elif "://" not in uri:  # a bare path: treat as a sqlite file
        uri = f"sqlite:///{Path(uri).resolve()}"
    return uri


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@dataclass(frozen=True)
class SweepRun:
    """A sweep's place in MLflow: its store, its experiment and its parent run; what every
    reader and writer of its trials' runs is given."""

    uri: str
    experiment_id: str
    parent_run_id: str


def flat_params(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Params as MLflow strings: credential fields dropped (nested ones and URI passwords
    masked), values cut to MLflow's 6000-character limit."""
    out = {}
    for key, value in values.items():
        if secrets.is_credential(key) or value is None:
            continue
        out[f"{prefix}{key}"] = str(secrets.mask(value))[:6000]
    return out


def ensure_experiment(uri: str, name: str, artifact_root: Path | None) -> str:
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND[0]) is None:
            c.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:") and artifact_root is not None:
        # The sqlite store's default artifact root is relative to the working directory.
        location = (artifact_root / name).resolve().as_uri()
    return c.create_experiment(name, artifact_location=location, tags=dict([EXPERIMENT_KIND]))


def sweep_description(spec, best: str = "") -> str:
    """The parent run's description: what the sweep is and what ranks it; `best`: who won."""
    axes = " × ".join(f"`{a}`" for a in spec.axis_names()) or "no swept field"
    text = (
        f"**sweep {spec.name}**: {spec.num_trials()} trials over {axes}, {spec.model} on {spec.dataset.path}, "
        f"ranked by `{spec.metric}` ({spec.mode}). Each trial is a child run of this one."
    )
    return secrets.mask_text(text + (f"\n\n{best}" if best else ""))  # a data URL may hold a password


def start_parent_run(uri: str, experiment_id: str, spec) -> str:
    c = client(uri)
    run = c.create_run(
        experiment_id,
        run_name=spec.name,
        tags={
            TAG_SWEEP: spec.name,
            TAG_KIND: "parent",
            TAG_FINGERPRINT: spec.fingerprint(),
            TAG_NOTE: sweep_description(spec),
        },
    )
    params = {"model": spec.model, "dataset": spec.dataset.path, "metric": spec.metric, "mode": spec.mode}
    from ..spec.points import describe_axis

    params["axes"] = ",".join(spec.axis_names())  # axis order, for reports
    params.update({f"axis.{k}": str(v) for k, v in spec.axes.items()})
    params.update({f"axis.{f}": f"{v} (zipped: {g})" for g, fs in spec.zipped.items() for f, v in fs.items()})
    params.update({f"axis.{k}": describe_axis(v) for k, v in spec.sampled.items()})
    params["search"] = f"{spec.search.method} x{spec.sample_count()}"
    params["num_trials"] = str(spec.num_trials())
    _log_params(c, run.info.run_id, flat_params(params))
    log_spec(c, run.info.run_id, spec)
    return run.info.run_id


def log_spec(c, run_id: str, spec) -> None:
    """Attach the spec that ran to the parent run as `spec/<file>`: the file as written
    (comments included); where `--set` overrides changed it, it came as a mapping (Python
    API), or it holds a secret (a literal `train.model_init_kwargs.token`, a URI's password), the YAML
    of what ran, secrets masked."""
    import tempfile

    import yaml

    header = []
    if spec.source and Path(spec.source).is_file():
        from ..spec.overrides import apply_overrides

        path = Path(spec.source)
        raw = apply_overrides(yaml.safe_load(path.read_text(encoding="utf-8")), spec.overrides)
        name = path.name
        if spec.overrides:  # the keys only: a value may be a secret
            keys = ", ".join(dict.fromkeys(o.partition("=")[0].strip() for o in spec.overrides))
            header.append(f"# {name} with --set overrides of: {keys}")
        elif secrets.mask(raw) == raw:
            c.log_artifact(run_id, str(path), artifact_path="spec")
            return
    else:
        raw, name = spec.to_dict(), f"{spec.name}.yaml"
        header.append("# the spec as passed to sweep.run (every field, defaults included)")
    if secrets.mask(raw) != raw:
        header.append("# secret values masked by sweep")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / name
        copy.write_text("\n".join(header) + "\n" + yaml.safe_dump(secrets.mask(raw), sort_keys=False))
        c.log_artifact(run_id, str(copy), artifact_path="spec")


def start_trial_run(
    sweep: SweepRun,
    spec,
    point: dict,
    trial_id: str,
    params: dict[str, Any],
    log_path: str | None = None,
) -> str:
    from ..spec.points import point_label

    losses = point.get("loss_type", spec.train.get("loss_type", "sigmoid"))
    tags = {
        "mlflow.parentRunId": sweep.parent_run_id,
        TAG_SWEEP: spec.name,
        TAG_KIND: "trial",
        TAG_TRIAL_ID: trial_id,
        TAG_POINT: point_label(point),
        TAG_LOSS: "+".join(losses) if isinstance(losses, list) else str(losses),
        TAG_NOTE: f"trial of sweep **{spec.name}** at {point_label(point) or 'its one point'}, ranked by `{spec.metric}`",
    }
    if log_path:
        tags[TAG_LOG_PATH] = log_path  # the live log, readable before the artifact is uploaded
    c = client(sweep.uri)
    run = c.create_run(sweep.experiment_id, run_name=point_label(point) or trial_id, tags=tags)
    swept = flat_params(point, SWEPT_PREFIX)  # one param per axis: the MLflow UI's columns
    typed = {POINT: json.dumps({k: secrets.mask(v) for k, v in point.items() if not secrets.is_credential(k)})}
    _log_params(c, run.info.run_id, {**flat_params(params), **swept, **typed})
    return run.info.run_id


def swept_values(params: dict[str, str]) -> dict[str, Any]:
    """A trial run's swept values, typed as the spec gave them (a list as its text, as the UI
    shows it); a run made before `POINT` was logged has its `sweep.*` params read as numbers
    where they are."""
    if POINT in params:
        point = json.loads(params[POINT])
        return {k: str(v) if isinstance(v, list) else v for k, v in point.items() if v is not None}
    return {k.removeprefix(SWEPT_PREFIX): _number(v) for k, v in params.items() if k.startswith(SWEPT_PREFIX)}


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def metric_points(metrics: dict[str, Any], step: int, timestamp_ms: int) -> list:
    """MLflow `Metric`s of the finite numbers in `metrics` (strings, bools and NaN/inf left out)."""
    from mlflow.entities import Metric

    return [
        Metric(key, float(value), timestamp_ms, step)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ]


def log_metrics(uri: str, run_id: str, metrics: dict[str, Any], step: int) -> None:
    batch = metric_points(metrics, step, int(time.time() * 1000))
    if batch:
        client(uri).log_batch(run_id, metrics=batch)


class StoreUnreachable(RuntimeError):
    """The tracking store could not take a write after the client's own retries: one line
    naming the store, what was not recorded and, where given, the cause (in place of
    MLflow's multi-line HTTP error). Built with `of`; the message alone pickles (Ray sends it)."""

    @classmethod
    def of(cls, uri: str, what: str, error: BaseException | None = None) -> StoreUnreachable:
        kind = "tracking server unreachable at" if uri.startswith("http") else "tracking store failed:"
        message = f"{kind} {secrets.mask_text(uri)}: {what}"
        if error is not None:
            text = str(error).strip()
            known = ("Connection refused", "timed out", "disk is full", "No space left")
            cause = next((c for c in known if c in text), text.splitlines()[0][:160] if text else type(error).__name__)
            message += f" ({cause})"
        return cls(message)


def end_run(uri: str, run_id: str, status: str, error: str | None = None) -> None:
    c = client(uri)
    if error:
        c.set_tag(run_id, TAG_ERROR, secrets.mask_text(error)[:5000])
    c.set_terminated(run_id, status=status)


def trial_runs(sweep: SweepRun) -> list:
    """Child runs of one sweep (all statuses), oldest first."""
    c = client(sweep.uri)
    runs, token = [], None
    while True:
        page = c.search_runs(
            [sweep.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{sweep.parent_run_id}'",
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def latest_parent_run(uri: str, experiment_name: str):
    """The newest parent run of the sweep named `experiment_name`, or None."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment_name)
    if exp is None:
        return None
    runs = c.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{TAG_KIND}` = 'parent'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def latest_trial_runs(sweep: SweepRun) -> list:
    """The latest attempt at each trial of one sweep (retries are runs of their own)."""
    return latest_attempts(trial_runs(sweep))


def latest_attempts(runs: list) -> list:
    """One run per point (trial id): its FINISHED run if it has one, else its latest attempt.

    A resumed or retried point has several runs (KILLED or FAILED attempts, then one that
    finished); tables count each point once, so nothing is duplicated or silently dropped.
    """
    chosen: dict[str, Any] = {}
    for run in runs:  # oldest first
        key = run.data.tags.get(TAG_TRIAL_ID) or run.info.run_id
        kept = chosen.get(key)
        if kept is None or kept.info.status != "FINISHED":
            chosen[key] = run
    return list(chosen.values())


def finished_trial_run(sweep: SweepRun, trial_id: str):
    """The FINISHED run of point `trial_id` in this sweep, if it has one."""
    return _latest_trial_run(sweep, trial_id, "and attributes.status = 'FINISHED'")


def running_trial_run(sweep: SweepRun, trial_id: str):
    """The RUNNING run of point `trial_id` in this sweep, if it has one."""
    return _latest_trial_run(sweep, trial_id, "and attributes.status = 'RUNNING'")


def reopen_trial_run(sweep: SweepRun, trial_id: str) -> str | None:
    """The latest run of point `trial_id`, RUNNING again (its pause or interruption undone), to
    go on logging where it stopped; None if the point has no run yet or its latest attempt
    FAILED (a retry is an attempt of its own, whatever checkpoint it starts from)."""
    run = _latest_trial_run(sweep, trial_id)
    if run is None or run.info.status not in ("KILLED", "RUNNING"):
        return None
    c = client(sweep.uri)
    for tag in (TAG_STOPPED_EARLY, TAG_ERROR):
        if tag in run.data.tags:
            c.delete_tag(run.info.run_id, tag)
    c.update_run(run.info.run_id, status="RUNNING")
    return run.info.run_id


def _latest_trial_run(sweep: SweepRun, trial_id: str, condition: str = ""):
    """The newest run of point `trial_id` in this sweep meeting `condition` (an MLflow filter clause), or None."""
    runs = client(sweep.uri).search_runs(
        [sweep.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{sweep.parent_run_id}' and tags.`{TAG_TRIAL_ID}` = '{trial_id}' {condition}",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def end_stopped_early(sweep: SweepRun, trial_ids) -> None:
    """End the still-RUNNING latest runs of `trial_ids` (trials the scheduler stopped) KILLED
    and tagged stopped early, as such a trial ends its own run."""
    if not trial_ids:
        return
    latest = {run.data.tags.get(TAG_TRIAL_ID): run for run in trial_runs(sweep)}
    for trial_id in trial_ids:
        run = latest.get(trial_id)
        if run is not None and run.info.status == "RUNNING":
            client(sweep.uri).set_tag(run.info.run_id, TAG_STOPPED_EARLY, "true")
            end_run(sweep.uri, run.info.run_id, "KILLED")


def kill_unfinished(sweep: SweepRun, reason: str, trial_ids=()) -> int:
    """Mark a sweep's RUNNING child runs KILLED (e.g. after Ctrl-C), and the latest runs of
    `trial_ids` (points Ray Tune had not finished) KILLED as interrupted rather than stopped
    early: a trial paused by the scheduler tagged itself so. Returns how many."""
    uri, runs = sweep.uri, trial_runs(sweep)
    latest = {run.data.tags.get(TAG_TRIAL_ID): run for run in runs}  # oldest first: the latest attempt wins
    paused = {latest[t].info.run_id for t in trial_ids if t in latest and TAG_STOPPED_EARLY in latest[t].data.tags}
    n = 0
    for run in runs:
        if run.info.status == "RUNNING" or run.info.run_id in paused:
            if run.info.run_id in paused:
                client(uri).delete_tag(run.info.run_id, TAG_STOPPED_EARLY)
            end_run(uri, run.info.run_id, "KILLED", reason)
            n += 1
    return n


def _log_params(c, run_id: str, values: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in values.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        c.log_batch(run_id, params=items[i : i + 100])
