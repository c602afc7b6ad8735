"""The judge's record in MLflow: each evaluation's per-prompt table on the trial's run (offered
first to MLflow's evaluation view, which compares runs' latest answers), and the base model's
metrics and answers on the sweep's parent run, once."""

from __future__ import annotations

from ..compat.mlflow_internals import table_offered_first
from .tracking import client, log_metrics

TABLE_DIR = "judge"  # artifact folder of the per-prompt tables
BASE_TABLE = f"{TABLE_DIR}/base.json"


def log_evaluation(uri: str, run_id: str, step: int, table) -> None:
    path = f"{TABLE_DIR}/step-{step:06d}.json"
    client(uri).log_table(run_id, data=table, artifact_file=path)
    table_offered_first(client(uri), run_id, path)  # the UI compares the latest answers


def log_base(uri: str, parent_run_id: str, metrics: dict[str, float], table, logged_as: str) -> None:
    """The base model's metrics and answers on the parent run, unless there already (`logged_as`:
    one of its metrics)."""
    c = client(uri)
    if logged_as in c.get_run(parent_run_id).data.metrics:
        return
    log_metrics(uri, parent_run_id, metrics, 0)
    c.log_table(parent_run_id, data=table, artifact_file=BASE_TABLE)


def log_base_scores(uri: str, parent_run_id: str, metrics: dict[str, float]) -> None:
    """The base model's scores on the parent run (the harness's), unless there already."""
    c = client(uri)
    if metrics and not set(metrics) <= set(c.get_run(parent_run_id).data.metrics):
        log_metrics(uri, parent_run_id, metrics, 0)
