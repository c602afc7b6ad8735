"""Imported by every worker process a local Ray starts, before it is given any work (Ray's
`preload_python_modules`, see cluster.py): the first $SWEEP_WARM_WORKERS of them import what
a trial needs, on the cores the driver leaves idle while it validates the spec, checks the
data and opens its MLflow store, so a trial scheduled on them starts at once.

The rest stay light: Ray prestarts one worker per CPU, and a machine with 16 CPUs and one
GPU runs one trial at a time (a warmed worker holds the whole stack in memory). Slots are files in
$SWEEP_WARM_DIR, claimed with O_EXCL, so no two workers take the same one.
"""

from __future__ import annotations

import glob
import importlib
import os

# What a trial imports: trainer, data, tracking (the sqlite store's SQLAlchemy models among it).
MODULES = (
    "sweep.driver.orchestrate",
    "sweep.trial.callbacks",
    "sweep.data",
    "trl.trainer.dpo_trainer",
    "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
)


def modules() -> tuple[str, ...]:
    """What this worker preloads. On a node with several GPUs, where trials may load a quantized
    model, it leaves out TRL: TRL imports PEFT, PEFT imports bitsandbytes, and bitsandbytes asks
    CUDA for every device's capability as it loads. That starts CUDA, which reads
    CUDA_VISIBLE_DEVICES once, before Ray sets it to the GPU the trial is given: every trial
    of a preloaded worker would then see all GPUs and train on GPU 0."""
    several_gpus = len(glob.glob("/dev/nvidia[0-9]*")) > 1
    if several_gpus and os.environ.get("SWEEP_SKIP_BITSANDBYTES") != "1":
        return tuple(m for m in MODULES if not m.startswith("trl."))
    return MODULES


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
        for _name in modules():
            importlib.import_module(_name)
    finally:
        startup.resume()
