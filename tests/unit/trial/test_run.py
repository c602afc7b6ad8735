"""One trial's failure reasons: out of memory and non-finite losses named as such."""

from __future__ import annotations


def test_failure_reasons_name_oom_and_nonfinite():
    import torch

    from sweep.trial.callbacks import NonFiniteLoss
    from sweep.trial.run import failure_reason

    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)")
    assert failure_reason(oom).startswith("CUDA out of memory: ")
    assert failure_reason(NonFiniteLoss("loss is nan at step 3")) == "non-finite loss: loss is nan at step 3"
    assert failure_reason(ValueError("bad")) == "ValueError: bad"
