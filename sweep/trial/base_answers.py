"""The base model's answers to the judged prompts and their scores, once per sweep: computed by
the first trial to need them (its adapter disabled), kept in the sweep's cache under a file lock
and read by the others; a damaged cache is answered again, never read as other prompts' scores."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from ..files import write_atomic
from ..runtime.shared_cache import model_identity
from .answers import Judged


def base_answers(
    model, judge: Callable, cache_dir: Path | None, key: dict, n_prompts: int, on_first: Callable
) -> Judged:
    """`judge(model)` with the adapter disabled, from the cache at `cache_dir` where another trial
    wrote it (`key`: what the answers depend on). `on_first(base)` runs under the lock, so
    whatever it records is recorded once per sweep."""
    if cache_dir is None:
        return _answered_by_base(model, judge)
    from filelock import FileLock

    path = cache_dir / f"judge-{cache_key(model, key)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        base = _cached(path, n_prompts)
        if base is None:
            base = _answered_by_base(model, judge)
            write_atomic(path, json.dumps(dataclasses.asdict(base)))
        on_first(base)
    return base


def _cached(path: Path, n_prompts: int) -> Judged | None:
    """The cached base answers, or None where there are none or the file is damaged (then
    they are computed again, with a warning): never scores of other prompts."""
    if not path.exists():
        return None
    try:
        base = Judged(**json.loads(path.read_text()))
        lists = (base.answers, base.lengths, base.totals, *base.scores.values())
        if all(len(values) == n_prompts for values in lists):
            return base
    except (ValueError, TypeError, AttributeError):
        pass
    print(f"warning: judge cache {path} is damaged; answering with the base model again", flush=True)
    return None


def _answered_by_base(model, judge: Callable) -> Judged:
    import contextlib

    with model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext():
        return judge(model)


def cache_key(model, key: dict) -> str:
    """Hash of what the base answers and scores depend on: `key` (prompts, tokenizer,
    generation, scorers), the model's weights, its device and the libraries."""
    import torch
    import transformers

    parts = {
        **key,
        "versions": [transformers.__version__, torch.__version__],
        "model": model_identity(model),
        "device": str(model.device),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
