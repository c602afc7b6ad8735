"""Where `sweep ui NAME` lands: MLflow's runs table with the sweep's trials listed (not one
collapsed parent row), ranked by the sweep's metric, the swept values and the headline metrics
first, the Dataset and Models columns beside them. MLflow keeps a shareable view of its runs
table as an experiment tag (`mlflow.sharedViewState.<key>`, what its "Share" button writes),
opened by `?viewStateShareKey=<key>`; `sweep ui` writes one per sweep."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from . import tracking

SHARED_VIEW_TAG = "mlflow.sharedViewState."
# Shown after the ranking metric where the trials logged them: what `report` leads with.
COMPANIONS = ("eval_judge/win_rate", "eval_judge/length", "eval_rewards/accuracies")
ALWAYS = ("attributes.`Dataset`", "attributes.`Models`")  # MLflow's own default columns, kept


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"  # MLflow's column ids


def landing_view(sweep, logged: set[str]) -> dict:
    """MLflow's view state for `sweep`'s trials: its search, sort and columns. `logged`: the
    metric keys the trials have (a column for a metric no run has is an empty one)."""
    ranking = _column("metrics", sweep.metric)
    columns = [
        ranking,
        *(_column("params", f"{tracking.SWEPT_PREFIX}{axis}") for axis in sweep.axes),
        *(_column("metrics", m) for m in COMPANIONS if m in logged and m != sweep.metric),
        *ALWAYS,
    ]
    return {
        "searchFilter": f"tags.`mlflow.parentRunId` = '{sweep.parent_run_id}'",
        "orderByKey": ranking,
        "orderByAsc": sweep.mode == "min",
        "selectedColumns": columns,
        "columnOrder": [_column("attributes", "Run Name"), *columns],
        "columnWidths": {_column("attributes", "Run Name"): 240},
    }


def share(sweep) -> str:
    """Write the sweep's landing view to its experiment; returns its key."""
    c = tracking.client(sweep.uri)
    one = c.search_runs([sweep.experiment_id], f"tags.`mlflow.parentRunId` = '{sweep.parent_run_id}'", max_results=1)
    key = f"sweep-{sweep.parent_run_id}"
    view = landing_view(sweep, set(one[0].data.metrics) if one else set())
    c.set_experiment_tag(sweep.experiment_id, SHARED_VIEW_TAG + key, json.dumps(view))
    return key


def url(base: str, experiment_id: str | None, view_key: str | None = None, page: str = "runs") -> str:
    """A page of `experiment_id` in MLflow 3's model-training view (its default for an experiment
    is a GenAI overview): `runs`, the runs table, opened on the shared view `view_key` where
    given; `answers`, the same runs compared by their logged tables (the judged answers, prompt
    by prompt); `models`, the Models tab."""
    if experiment_id is None:
        return f"{base}/#/experiments"
    query = {"workflowType": "machine_learning"}
    if page != "models" and view_key:
        query["viewStateShareKey"] = view_key
    if page == "answers":
        query["compareRunsMode"] = "ARTIFACT"
    route = "models" if page == "models" else "runs"
    return f"{base}/#/experiments/{experiment_id}/{route}?{urlencode(query)}"
