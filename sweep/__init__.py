"""sweep: hyperparameter sweeps for preference tuning (DPO and its family) on Ray Tune + MLflow."""

import os as _os

# Ray workers of a sweep in which no trial loads a quantized model start with this set
# (cluster.py). Every trial imports this package before the stack, so the block is in place
# before PEFT looks for bitsandbytes (model.skip_bitsandbytes says why).
if _os.environ.get("SWEEP_SKIP_BITSANDBYTES") == "1":
    from .model import skip_bitsandbytes

    skip_bitsandbytes()
