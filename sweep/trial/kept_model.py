"""The base model a warm worker keeps loaded between its trials.

Ray Tune reuses a trial's actor for the next trial (`reuse_actors=True`), so the process keeps
its imports; `base_model` also keeps the loaded base model there, `release_base_model` takes
the adapter off after a trial and undoes what the trial's trainer did to the base (dtype
casts, gradient checkpointing), and the next trial may use it only once its
tensors are exactly what was loaded: the same names, dtypes, shapes, devices and bytes
(`weights_fingerprint`).
"""

from __future__ import annotations

import gc
import hashlib
import json
from typing import Any, NamedTuple

from .model import load_base_model


class Kept(NamedTuple):
    model: Any
    fingerprint: str  # weights_fingerprint as loaded
    dtypes: dict[str, Any]  # parameter name -> dtype as loaded


_BASE: dict[str, Kept] = {}  # key -> the base model kept; one per worker process

# Words an on-device digest reads at a time: its working memory stays ~100 MB on any tensor
# (a 152k-row embedding as float64 would be ~1 GB on a fraction of a GPU).
CHUNK = 1 << 22


def base_model(path: str, bnb, cuda: bool, bf16: bool, log=print):
    """The base model, loaded once per worker process and reused by its later trials, each
    time only after checking its tensors are exactly those loaded (a trial that failed
    half-way may have left an adapter or a cast in it: then it is loaded afresh)."""
    key = json.dumps([path, bnb.to_dict() if bnb is not None else None, cuda, bf16], sort_keys=True, default=str)
    if key in _BASE:
        kept = _BASE[key]
        if weights_fingerprint(kept.model) == kept.fingerprint:
            log("base model: reused from this worker's previous trial")
            return kept.model
        log("base model: changed since it was loaded; loading it again")
    if _BASE:  # one base model per worker: the one replaced may be collected
        _BASE.clear()
        gc.unfreeze()
    model = load_base_model(path, bnb, cuda, bf16)
    _BASE[key] = Kept(model, weights_fingerprint(model), {n: p.dtype for n, p in model.named_parameters()})
    # What is alive now (the stack's modules, the base model) lives as long as the worker:
    # keep the collector from scanning it again at every gc.collect (accelerate runs one as
    # each trial's training starts).
    gc.freeze()
    return model


def release_base_model(peft_model) -> None:
    """Take the trial's adapter off the shared base model (PEFT's `unload`: the LoRA layers
    are replaced by the original modules) and undo what its trainer set on the base: CPO's and
    ORPO's k-bit preparation casts norms and embeddings (bf16 -> fp32 -> bf16 is exact) and turns
    on gradient checkpointing; a later DPO trial must not inherit them. (Its hook making the
    embeddings' output require grad stays: it changes no value, and DPO's trainer adds the same
    one under activation checkpointing.)"""
    if not hasattr(peft_model, "unload"):
        return
    base = peft_model.get_base_model()
    kept = next((k for k in _BASE.values() if k.model is base), None)
    if kept is None:
        return
    model = peft_model.unload().eval()
    dtypes = kept.dtypes
    for name, p in model.named_parameters():
        if name in dtypes and p.dtype != dtypes[name] and p.dtype.is_floating_point:
            p.data = p.data.to(dtypes[name])
    if getattr(model, "is_activation_checkpointing", False):
        model.activation_checkpointing_disable()


def weights_fingerprint(model) -> str:
    """A hash of every parameter's and buffer's name, dtype, shape and device, and of its bytes:
    on CPU the bytes themselves (equal iff bit-identical); on a GPU an integer digest computed
    there, in chunks (copying a 7B model to the host to hash it would cost more than loading it)."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            t = t.detach()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|{t.device}".encode())
            h.update(_digest(t))
    return h.hexdigest()


def _digest(t) -> bytes:
    return _raw(t).numpy().tobytes() if t.device.type == "cpu" else device_digest(t)


def device_digest(t) -> bytes:
    """Two sums over `t`'s raw bytes read as integers (plain and position-weighted, wrapping at
    2^64): any change of one word changes the first, a swap of two the second. Computed where `t`
    lives, `CHUNK` words at a time."""
    import torch

    raw = _raw(t)
    words = raw.view(torch.int32) if raw.numel() % 4 == 0 else raw
    plain = torch.zeros((), dtype=torch.int64, device=t.device)
    weighted = torch.zeros((), dtype=torch.int64, device=t.device)
    for start in range(0, words.numel(), CHUNK):
        part = words[start : start + CHUNK].to(torch.int64)
        position = torch.arange(start + 1, start + 1 + part.numel(), dtype=torch.int64, device=t.device)
        plain += part.sum()
        weighted += (part * position).sum()
    return f"{plain.item()}:{weighted.item()}".encode()


def _raw(t):
    """`t`'s bytes as a flat uint8 tensor (a view where `t` is contiguous)."""
    import torch

    return t.contiguous().reshape(-1).view(torch.uint8)
