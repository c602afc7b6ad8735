"""The data a sweep trained and evaluated on, recorded as MLflow dataset inputs: the runs
table's Dataset column and filter. Each split's name, source, digest, schema and row count
are MLflow's own (`mlflow.data.from_huggingface`), computed once by the driver; the parent
run and every trial run log the same two inputs, with their context."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..builtin import BUILTIN_DATASETS
from ..spec.schema import DatasetSpec

if TYPE_CHECKING:
    import pandas as pd

CONTEXTS = {"train": "training", "eval": "evaluation"}  # MLflow's `mlflow.data.context` values
ENTITY_FIELDS = ("name", "digest", "source_type", "source", "schema", "profile")


def describe(ds: DatasetSpec, data) -> list[dict[str, str]]:
    """One plain dict per split of `data` (as loaded for the sweep: limits and mapping applied),
    picklable for the trials: MLflow's dataset fields and the split's context."""
    import mlflow.data

    described = []
    for split, context in CONTEXTS.items():
        dataset = mlflow.data.from_huggingface(data[split], name=f"{ds.path} {split}", **_where(ds))
        described.append({**dataset.to_dict(), "context": context})
    return described


def _where(ds: DatasetSpec) -> dict:
    """`from_huggingface`'s source arguments: a hub id by name, local data (file, folder, builtin) by path."""
    if ds.path.startswith("builtin:"):
        return {"source": _local(BUILTIN_DATASETS[ds.path.removeprefix("builtin:")])}
    path = Path(ds.path).expanduser()
    if path.exists():
        return {"source": _local(path.resolve())}
    return {"path": ds.path}


def _local(path: Path):
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():  # MLflow 3.17 registers its local source twice, and says so
        warnings.simplefilter("ignore")
        return resolve_dataset_source(str(path))


def log(client, run_id: str, described: list[dict[str, str]]) -> None:
    """Record `describe`'s splits as the run's dataset inputs."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    client.log_inputs(
        run_id,
        datasets=[
            DatasetInput(
                Dataset(**{k: d[k] for k in ENTITY_FIELDS if k in d}),
                tags=[InputTag("mlflow.data.context", d["context"])],
            )
            for d in described
        ],
    )


def evaluation_split(run) -> tuple[str, str] | None:
    """(name, digest) of the split `run`'s held-out metrics were measured on, if it logged one."""
    for d in run.inputs.dataset_inputs if run.inputs else []:
        if any(t.key == "mlflow.data.context" and t.value == CONTEXTS["eval"] for t in d.tags):
            return d.dataset.name, d.dataset.digest
    return None


def frame(run) -> pd.DataFrame:
    """A run's dataset inputs, one row per split: what the MLflow UI's Dataset column shows."""
    import pandas as pd

    rows = []
    for d in run.inputs.dataset_inputs:
        profile = json.loads(d.dataset.profile) if d.dataset.profile else {}
        rows.append(
            {
                "context": next((t.value for t in d.tags if t.key == "mlflow.data.context"), None),
                "name": d.dataset.name,
                "digest": d.dataset.digest,
                "source_type": d.dataset.source_type,
                "source": d.dataset.source,
                "rows": profile.get("num_rows"),
            }
        )
    return pd.DataFrame(rows, columns=["context", "name", "digest", "source_type", "source", "rows"])
