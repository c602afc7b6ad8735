"""Many runs' metrics in a few requests. MLflow's client reads one run's history of one metric
per call (a large sweep's per-step export: a call per trial and metric) and searches runs whole
(every param of every run, where `status` needs five fields); its stores can do better, through parts
the client does not expose: a SQL store's tables, queried for the columns needed (MLflow's own
table models), and, for a tracking server, the `get-history-bulk` route its UI draws charts with
(100 runs per request, 25,000 points per answer). Where the installed MLflow is not the version
this was written for, or the store is neither, runs are searched whole and histories read one
run and metric at a time, as the client does."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from . import usable

BULK_ROUTE = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
RUNS_PER_REQUEST = 100  # the server's limit
POINTS_PER_ANSWER = 25_000  # the server's limit: an answer this long may be cut, and is asked again in halves
RUNS_PER_QUERY = 500  # SQLite takes up to 32,766 parameters; a few hundred keep each query short


class Point(NamedTuple):
    """One logged value of a metric (what readers use of MLflow's `Metric`)."""

    step: int
    value: float
    timestamp: int


def metric_histories(client, run_ids: list[str], keys: Iterable[str]) -> dict[tuple[str, str], list[Point]]:
    """{(run id, metric key): its points} for every pair that has any, each history in the
    order it was logged (by time, then step)."""
    keys = list(dict.fromkeys(keys))
    out: dict[tuple[str, str], list[Point]] = {}
    if not run_ids or not keys:
        return out
    store = _store(client)
    if store is not None and hasattr(store, "ManagedSessionMaker"):  # a SQL store
        return _from_tables(store, run_ids, keys)
    if store is not None and hasattr(store, "get_host_creds"):  # a tracking server (RestStore)
        for key in keys:
            for start in range(0, len(run_ids), RUNS_PER_REQUEST):
                for run_id, point in _from_server(store, run_ids[start : start + RUNS_PER_REQUEST], key):
                    out.setdefault((run_id, key), []).append(point)
        return out
    for run_id in run_ids:
        for key in keys:
            history = client.get_metric_history(run_id, key)
            if history:
                out[(run_id, key)] = [Point(m.step, m.value, m.timestamp) for m in history]
    return out


def _from_tables(store, run_ids: list[str], keys: list[str]) -> dict[tuple[str, str], list[Point]]:
    import math

    from mlflow.store.tracking.dbmodels.models import SqlMetric

    out: dict[tuple[str, str], list[Point]] = {}
    m = SqlMetric
    with store.ManagedSessionMaker() as session:
        for start in range(0, len(run_ids), RUNS_PER_QUERY):
            rows = (
                session.query(m.run_uuid, m.key, m.step, m.value, m.timestamp, m.is_nan)
                .filter(m.run_uuid.in_(run_ids[start : start + RUNS_PER_QUERY]), m.key.in_(keys))
                .order_by(m.run_uuid, m.key, m.timestamp, m.step)
            )
            for run_id, key, step, value, timestamp, is_nan in rows:
                out.setdefault((run_id, key), []).append(Point(step, math.nan if is_nan else value, timestamp))
    return out


def _store(client):
    """The client's store where the installed MLflow is the one this module was written for."""
    if not usable("reading many runs' metrics at once", "mlflow"):
        return None
    return client._tracking_client.store


def _from_server(store, run_ids: list[str], key: str) -> list[tuple[str, Any]]:
    from mlflow.utils.rest_utils import http_request

    params = [("run_id", r) for r in run_ids] + [("metric_key", key), ("max_results", POINTS_PER_ANSWER)]
    answer = http_request(store.get_host_creds(), BULK_ROUTE, "GET", params=params)
    answer.raise_for_status()
    points = answer.json().get("metrics", [])
    if len(points) >= POINTS_PER_ANSWER and len(run_ids) > 1:  # cut at the limit: ask in halves
        half = len(run_ids) // 2
        return _from_server(store, run_ids[:half], key) + _from_server(store, run_ids[half:], key)
    return [(p["run_id"], Point(p["step"], p["value"], p["timestamp"])) for p in points]


def child_runs(client, experiment_id: str, parent_run_id: str, metrics=(), tags=(), params=()) -> list[Any] | None:
    """The child runs of `parent_run_id`, oldest first, each with only the named metrics (latest
    values), tags and params (None: all of them; a name ending in "." stands for every name it
    begins), from one query per table of a SQL store; None elsewhere (the caller searches the
    runs whole). A large sweep's `status` needs a few fields of each run, not every param of
    every run."""
    store = _store(client)
    if store is None or not hasattr(store, "ManagedSessionMaker"):
        return None
    import math
    from types import SimpleNamespace

    import sqlalchemy
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlRun, SqlTag

    with store.ManagedSessionMaker() as session:
        children = (
            session.query(SqlTag.run_uuid)
            .filter(SqlTag.key == "mlflow.parentRunId", SqlTag.value == parent_run_id)
            .scalar_subquery()
        )
        found = (
            session.query(SqlRun.run_uuid, SqlRun.name, SqlRun.status, SqlRun.start_time, SqlRun.end_time)
            .filter(
                SqlRun.experiment_id == int(experiment_id),
                SqlRun.lifecycle_stage == "active",
                SqlRun.run_uuid.in_(children),
            )
            .order_by(SqlRun.start_time)
            .all()
        )
        data = {row.run_uuid: SimpleNamespace(metrics={}, tags={}, params={}) for row in found}
        for table, keys, field in (
            (SqlLatestMetric, metrics, "metrics"),
            (SqlTag, tags, "tags"),
            (SqlParam, params, "params"),
        ):
            if keys is not None and not keys:
                continue
            nan = table.is_nan if table is SqlLatestMetric else sqlalchemy.false()  # NaN is stored as 0 and a flag
            rows = session.query(table.run_uuid, table.key, table.value, nan).filter(table.run_uuid.in_(children))
            if keys is not None:
                names = [k for k in keys if not k.endswith(".")]
                prefixes = [table.key.startswith(k, autoescape=True) for k in keys if k.endswith(".")]
                rows = rows.filter(sqlalchemy.or_(table.key.in_(names), *prefixes))
            for run_id, key, value, is_nan in rows:
                if run_id in data:
                    getattr(data[run_id], field)[key] = math.nan if is_nan else value
    return [
        SimpleNamespace(
            info=SimpleNamespace(
                run_id=row.run_uuid,
                run_name=row.name,
                status=row.status,
                start_time=row.start_time,
                end_time=row.end_time,
            ),
            data=data[row.run_uuid],
        )
        for row in found
    ]


LOGGED_TABLES_TAG = "mlflow.loggedArtifacts"  # a run's tables (`log_table`), in the order MLflow's UI offers them


def table_offered_first(client, run_id: str, path: str) -> None:
    """MLflow's evaluation view (runs compared by their logged tables) opens on the first table
    of the runs' `mlflow.loggedArtifacts` tag, the oldest logged: put `path` first instead."""
    if not usable("opening MLflow's evaluation view on the latest judged answers", "mlflow"):
        return
    import json

    tables = json.loads(client.get_run(run_id).data.tags.get(LOGGED_TABLES_TAG, "[]"))
    first = [t for t in tables if t.get("path") == path]
    if first:
        client.set_tag(run_id, LOGGED_TABLES_TAG, json.dumps(first + [t for t in tables if t.get("path") != path]))
