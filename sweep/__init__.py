"""sweep: hyperparameter sweeps for preference tuning (DPO and its family) on Ray Tune + MLflow.

The Python API (`sweep.run`, `sweep.trials`, `sweep.history`, `sweep.best`, ...) lives in
`sweep.api` and is re-exported here, imported on first use: trials import this package too,
and must not pay for pandas and MLflow before their stack.
"""

import os as _os

# Ray workers of a sweep in which no trial loads a quantized model start with this set
# (cluster.py). Every trial imports this package before the stack, so the block is in place
# before PEFT looks for bitsandbytes (model.skip_bitsandbytes says why).
if _os.environ.get("SWEEP_SKIP_BITSANDBYTES") == "1":
    from .trial.model import skip_bitsandbytes

    skip_bitsandbytes()

__all__ = [
    "load",
    "run",
    "open_sweep",
    "trials",
    "history",
    "samples",
    "judgements",
    "datasets",
    "models",
    "evaluate",
    "promote",
    "best",
    "importance",
    "pareto",
    "findings",
    "report",
    "plots",
    "html",
    "compare",
    "logs",
    "status",
    "list_sweeps",
    "SpecError",
]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'sweep' has no attribute {name!r}")
