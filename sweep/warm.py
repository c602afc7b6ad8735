"""Imported by every worker process a local Ray starts, before it is given any work (Ray's
`preload_python_modules`, see cluster.py): the first $SWEEP_WARM_WORKERS of them import what
a trial needs, on the cores the driver leaves idle while it validates the spec, checks the
data and opens its MLflow store, so a trial scheduled on them starts at once.

The rest stay light: Ray prestarts one worker per CPU, and a machine with 16 CPUs and one
GPU runs one trial at a time (~600 MB and ~5 CPU-s per warmed worker). Slots are files in
$SWEEP_WARM_DIR, claimed with O_EXCL, so no two workers take the same one.
"""

from __future__ import annotations

import importlib
import os

# What a trial imports: trainer, data, tracking (the sqlite store is ~1 s of it).
MODULES = (
    "sweep.orchestrate",
    "sweep.callbacks",
    "sweep.data",
    "trl.trainer.dpo_trainer",
    "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
)


def _claim_slot() -> bool:
    folder, slots = os.environ.get("SWEEP_WARM_DIR"), int(os.environ.get("SWEEP_WARM_WORKERS", "0"))
    for i in range(slots if folder else 0):
        try:
            os.close(os.open(os.path.join(folder, f"slot-{i}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            continue
        except OSError:  # the folder is gone: Ray is shutting down
            return False
    return False


if _claim_slot():
    from . import startup

    startup.pause()  # ~30% of the import is the garbage collector rescanning it (startup.py)
    try:
        for _name in MODULES:
            importlib.import_module(_name)
    finally:
        startup.resume()
