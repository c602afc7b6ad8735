"""Many runs' metric histories in a few requests. MLflow's client reads one run's history of one
metric per call (a 1,000-trial sweep's per-step export: ~30,000 calls); its stores can do better,
through parts the client does not expose: the SQL store's `get_metric_history_bulk` (one query
for one metric over many runs) and, for a tracking server, the `get-history-bulk` route its own
UI draws charts with (100 runs per request, 25,000 points per answer). Where the installed MLflow
is not the version this was written for, or the store is neither, each run and metric is read on
its own, as before."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import usable

BULK_ROUTE = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
RUNS_PER_REQUEST = 100  # the server's limit
POINTS_PER_ANSWER = 25_000  # the server's limit: an answer this long may be cut, and is asked again in halves
RUNS_PER_QUERY = 500  # SQLite takes up to 32,766 parameters; a few hundred keep each query short


def metric_histories(client, run_ids: list[str], keys: Iterable[str]) -> dict[tuple[str, str], list[Any]]:
    """{(run id, metric key): its points (mlflow Metric: step, value, timestamp)} for every pair
    that has any, each history in the order it was logged."""
    keys = list(dict.fromkeys(keys))
    out: dict[tuple[str, str], list[Any]] = {}
    if not run_ids or not keys:
        return out
    store = _store(client)
    if store is not None and hasattr(store, "get_metric_history_bulk"):
        for key in keys:
            for start in range(0, len(run_ids), RUNS_PER_QUERY):
                for m in store.get_metric_history_bulk(run_ids[start : start + RUNS_PER_QUERY], key, None):
                    out.setdefault((m.run_id, key), []).append(m)
        return out
    if store is not None and hasattr(store, "get_host_creds"):  # a tracking server (RestStore)
        for key in keys:
            for start in range(0, len(run_ids), RUNS_PER_REQUEST):
                for run_id, m in _from_server(store, run_ids[start : start + RUNS_PER_REQUEST], key):
                    out.setdefault((run_id, key), []).append(m)
        return out
    for run_id in run_ids:
        for key in keys:
            history = client.get_metric_history(run_id, key)
            if history:
                out[(run_id, key)] = history
    return out


def _store(client):
    """The client's store where the installed MLflow is the one this module was written for."""
    if not usable("reading many runs' metrics at once", "mlflow"):
        return None
    return client._tracking_client.store


def _from_server(store, run_ids: list[str], key: str) -> list[tuple[str, Any]]:
    from mlflow.entities import Metric
    from mlflow.utils.rest_utils import http_request

    params = [("run_id", r) for r in run_ids] + [("metric_key", key), ("max_results", POINTS_PER_ANSWER)]
    answer = http_request(store.get_host_creds(), BULK_ROUTE, "GET", params=params)
    answer.raise_for_status()
    points = answer.json().get("metrics", [])
    if len(points) >= POINTS_PER_ANSWER and len(run_ids) > 1:  # cut at the limit: ask in halves
        half = len(run_ids) // 2
        return _from_server(store, run_ids[:half], key) + _from_server(store, run_ids[half:], key)
    return [(p["run_id"], Metric(p["key"], p["value"], p["timestamp"], p["step"])) for p in points]
