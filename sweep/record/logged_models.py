"""Kept adapters and promoted models as MLflow 3 logged models: the experiment's Models tab lists
each trial's adapter with the metrics it was ranked by, and `promote --register NAME` puts the
merged model in the Model Registry under alias `best`, loadable with `mlflow.transformers`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from . import tracking

if TYPE_CHECKING:
    import pandas as pd

ADAPTER_TYPE = "LoRA adapter"  # the Models tab's "Model type" of a trial's adapter
MERGED_TYPE = "merged model"  # `promote`: the adapter merged into its base, an MLflow transformers model
TAG_PARENT = "sweep.parent_run_id"  # which sweep a logged model belongs to (they live per experiment)
TAG_TRIAL = "sweep.trial"  # the trial's name (its swept values), which a model's name cannot hold
TAG_STEP = "sweep.step"  # the trial's step the model was logged at: its metrics are those of that step
ALIAS = "best"
MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # a logged model's registered versions, as MLflow records them


def log_adapter(client, run, folder, step: int) -> str:
    """Log the adapter saved in `folder` as a logged model of trial `run`; returns its model id.
    Its metrics are linked at the end of the sweep (`link_metrics`), once every point the trial
    logged is in the store."""
    return _log(client, run, folder, step, ADAPTER_TYPE, "adapter")


def log_merged(client, run, folder, step: int) -> str:
    """Log the MLflow model saved in `folder` (trial `run`'s adapter merged into its base) as a
    logged model of the trial's run; returns its model id."""
    return _log(client, run, folder, step, MERGED_TYPE, "merged")


def _log(client, run, folder, step: int, model_type: str, kind: str) -> str:
    """A logged model of `run` from `folder`, named `<kind>-<trial id>` (MLflow takes no '.', ':'
    or '/' in a model's name; the trial's name is a tag), with the trial's swept values as params,
    the run's output at `step`. Through the client with the run's id, never the fluent active run
    (`mlflow.<flavor>.log_model`), which would end the trial's run if logging raised."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    model = client.create_logged_model(
        run.info.experiment_id,
        name=f"{kind}-{run.data.tags.get(tracking.TAG_TRIAL_ID, run.info.run_id)}",
        source_run_id=run.info.run_id,
        tags={
            TAG_PARENT: run.data.tags.get("mlflow.parentRunId", ""),
            TAG_TRIAL: run.info.run_name,
            TAG_STEP: str(step),
        },
        params={k: v for k, v in run.data.params.items() if k.startswith(tracking.SWEPT_PREFIX)},
        model_type=model_type,
    )
    try:
        client.log_model_artifacts(model.model_id, str(folder))
    except BaseException:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    client.log_outputs(run.info.run_id, [LoggedModelOutput(model.model_id, step=step)])
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    return model.model_id


def adapter_of(client, run):
    """The latest ready adapter logged for `run`, or None (a run of `save: none`, or one recorded
    before adapters were logged models: its adapter is the run artifact `adapter/`)."""
    from mlflow.entities import LoggedModelStatus

    outputs = run.outputs.model_outputs if run.outputs else []
    for output in reversed(outputs):
        model = client.get_logged_model(output.model_id)
        if model.model_type == ADAPTER_TYPE and model.status == LoggedModelStatus.READY:
            return model
    return None


def adapter_uri(client, run) -> str | None:
    """Where `run`'s adapter is: its logged model, or the run artifact of an older record; None."""
    model = adapter_of(client, run)
    if model is not None:
        return model.model_uri
    if tracking.ADAPTER in {a.path for a in client.list_artifacts(run.info.run_id)}:
        return f"runs:/{run.info.run_id}/{tracking.ADAPTER}"
    return None


def download_adapter(uri: str, run, dst: str | Path | None = None) -> Path:
    """`run`'s adapter folder on this machine (PEFT's `PeftModel.from_pretrained` loads it)."""
    import mlflow.artifacts

    c = tracking.client(uri)
    model = adapter_of(c, run)
    dst = str(dst or tempfile.mkdtemp(prefix="sweep-adapter-"))
    if model is not None:
        return Path(
            mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location, tracking_uri=uri, dst_path=dst)
        )
    if tracking.ADAPTER in {a.path for a in c.list_artifacts(run.info.run_id)}:
        return Path(c.download_artifacts(run.info.run_id, tracking.ADAPTER, dst))
    raise LookupError(f"trial {run.info.run_name} has no saved adapter (run the sweep with `save: all` or `best`)")


def sweep_models(client, experiment_id: str, parent_run_id: str) -> list:
    """Every model logged for the sweep's trials (adapters, merged models), oldest first."""
    found, token = [], None
    while True:
        page = client.search_logged_models(
            [experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}'", page_token=token
        )
        found.extend(page)
        token = page.token
        if not token:
            return sorted(found, key=lambda m: m.creation_timestamp)


def link_metrics(client, models, keys, evaluation: tuple[str, str] | None = None) -> None:
    """Link each model without metrics to its trial's metrics `keys` at the step it was logged, as
    MLflow's own `log_model` does: each point is logged again with the model's id and its original
    timestamp, so the run's history gains no point. Named `evaluation`: the (name, digest) of the
    split held-out (`eval_*`) metrics were measured on."""
    from mlflow.entities import Metric

    from ..compat.mlflow_internals import metric_histories

    name, digest = evaluation or (None, None)
    unlinked = {m.source_run_id: m for m in models if not m.metrics}
    histories = metric_histories(client, list(unlinked), keys)
    for run_id, model in unlinked.items():
        step = int(model.tags.get(TAG_STEP, -1))
        points = [
            Metric(
                key,
                p.value,
                p.timestamp,
                p.step,
                model_id=model.model_id,
                **({"dataset_name": name, "dataset_digest": digest} if key.startswith("eval_") else {}),
                run_id=run_id,
            )
            for key in keys
            for p in histories.get((run_id, key), [])[-1:]  # the latest point, if at the model's step
            if p.step == step
        ]
        if points:
            client.log_batch(run_id, metrics=points)


def register(uri: str, model_id: str, run_id: str, name: str) -> str:
    """A new version of registered model `name` (created if new) from logged model `model_id`,
    given alias `best`; returns the version."""
    from mlflow.exceptions import MlflowException

    c = tracking.client(uri)
    try:
        c.create_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # The model's own location as the source: the registry resolves a `models:/<id>` source through
    # the process's global tracking URI, not this client's.
    model = c.get_logged_model(model_id)
    version = c.create_model_version(name, source=model.artifact_location, run_id=run_id, model_id=model_id)
    c.set_registered_model_alias(name, ALIAS, version.version)
    # The link the Models tab's "Registered models" column reads, as MLflow's `register_model` writes it.
    versions = json.loads(model.tags.get(MODEL_VERSIONS_TAG, "[]")) + [{"name": name, "version": version.version}]
    c.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: json.dumps(versions)})
    return version.version


def frame(client, sweep, ranked_run_ids: list[str]) -> pd.DataFrame:
    """The sweep's logged models in the order of their trials' ranking: what the Models tab lists,
    with each model's ranking metric and the registered versions made from it (`NAME@best v2`)."""
    import pandas as pd

    models = sweep_models(client, sweep.experiment_id, sweep.parent_run_id)
    registered = _registered(client, models)
    rows = [
        {
            "trial": m.tags.get(TAG_TRIAL),
            "model_type": m.model_type,
            "model_uri": m.model_uri,
            "status": str(m.status),
            sweep.metric: next((x.value for x in m.metrics or [] if x.key == sweep.metric), float("nan")),
            "registered": ", ".join(registered.get(m.model_id, [])),
            "run_id": m.source_run_id,
            "model_id": m.model_id,
        }
        for m in models
    ]
    columns = ["trial", "model_type", "model_uri", "status", sweep.metric, "registered", "run_id", "model_id"]
    rank = {run_id: i for i, run_id in enumerate(ranked_run_ids)}
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values("run_id", key=lambda ids: ids.map(rank), kind="stable").reset_index(drop=True)


def _registered(client, models) -> dict[str, list[str]]:
    """{model id: ["NAME@best v2", ...]}: the registered versions made from `models`, as each
    model's `mlflow.modelVersions` tag lists them (`register`), with the aliases they hold now."""
    found: dict[str, list[str]] = {}
    aliases: dict[str, dict] = {}
    for model in models:
        for v in json.loads(model.tags.get(MODEL_VERSIONS_TAG, "[]")):
            if v["name"] not in aliases:
                aliases[v["name"]] = client.get_registered_model(v["name"]).aliases
            named = "".join(f"@{a}" for a, n in aliases[v["name"]].items() if str(n) == str(v["version"]))
            found.setdefault(model.model_id, []).append(f"{v['name']}{named} v{v['version']}")
    return found


def registered_name(name: str) -> str:
    """`name` if the Model Registry takes it and `models:/NAME@best` can say it; else ValueError."""
    if not name.strip() or set(name) & set("/:@") or name.strip() in (".", ".."):
        raise ValueError(f"{name!r}: a registered model's name is non-empty, without '/', ':' or '@'")
    return name
