"""The base model a warm worker keeps loaded between its trials.

Ray Tune reuses a trial's actor for the next trial (`reuse_actors=True`), so the process keeps
its imports; `base_model` also keeps the loaded base model there, `release_base_model` takes
the adapter off after a trial, and the next trial may use it only once its weights are
bit-for-bit what was loaded (`weights_fingerprint`).
"""

from __future__ import annotations

import gc
import hashlib
import json
from typing import Any

_BASE: dict[str, Any] = {}  # key -> (model, fingerprint); one per worker process


def base_model(path: str, bnb, cuda: bool, bf16: bool, log=print):
    """The base model, loaded once per worker process and reused by its later trials, each
    time only after checking its weights are exactly those loaded (a trial that failed
    half-way may have left an adapter in it: then it is loaded afresh)."""
    from .model import load_base_model

    key = json.dumps([path, bnb.to_dict() if bnb is not None else None, cuda, bf16], sort_keys=True, default=str)
    if key in _BASE:
        model, fingerprint = _BASE[key]
        if weights_fingerprint(model) == fingerprint:
            log("base model: reused from this worker's previous trial")
            return model
        log("base model: changed since it was loaded; loading it again")
    if _BASE:  # one base model per worker: the one replaced may be collected
        _BASE.clear()
        gc.unfreeze()
    model = load_base_model(path, bnb, cuda, bf16)
    _BASE[key] = (model, weights_fingerprint(model))
    # What is alive now (the stack's modules, the base model) lives as long as the worker:
    # keep the collector from scanning it again at every gc.collect (accelerate runs one as
    # each trial's training starts: ~0.4 s each on 2 cores, ~0.05 s frozen).
    gc.freeze()
    return model


def release_base_model(peft_model) -> None:
    """Take the trial's adapter off the shared base model (PEFT's `unload`: the LoRA layers
    are replaced by the original modules, base weights untouched)."""
    if hasattr(peft_model, "unload") and any(peft_model.get_base_model() is m for m, _ in _BASE.values()):
        peft_model.unload().eval()


def weights_fingerprint(model) -> str:
    """On CPU a hash of every parameter's and buffer's bytes (equal iff bit-identical); on a
    GPU, per-tensor float64 sums computed there (copying a 7B model to the host to hash it
    would cost more than loading it)."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            h.update(name.encode())
            t = t.detach()
            if t.is_cuda:
                h.update(repr([t.double().sum().item(), t.double().abs().sum().item()]).encode())
            else:
                h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
