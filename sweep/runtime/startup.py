"""How a sweep's processes start: library chatter kept off the console (`QUIET_ENV`),
Python's cyclic garbage collector paused while the stack is imported, and (training on CPU)
freed memory kept for the next step (`keep_freed_memory`).

Importing the stack (torch, transformers, TRL, PEFT, datasets, MLflow, Ray Tune) creates
hundreds of thousands of objects, and CPython 3.11 collects its young generations every 700
new objects and rescans the whole heap each time it has grown by a quarter: a large share of
the import's CPU, for nothing (what an import creates lives as long as the process), and a
sweep's start-up is bound by the CPU of the processes importing it (the figures:
docs/benchmarks.md, `benchmarks/startup_gc.py`).

`pause()` turns the collector off; `resume()` freezes what start-up created (gc.freeze: later
collections never scan it again) and turns it back on. The little import-time garbage is
frozen too rather than collected: collecting it would scan everything once more.
"""

from __future__ import annotations

import contextlib
import gc
import os

QUIET_ENV = {  # set (where unset) by the CLI and for `sweep.run`: library chatter belongs in trial logs
    "TOKENIZERS_PARALLELISM": "false",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # "🏃 View run ..." per run end
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0: no box tables on the console
    # Tune's own CSV/JSON/TensorBoard files per trial: MLflow is the record, and Tune's
    # TensorBoard logger imports torch into a driver that trains nothing.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}
_PAUSED = False


def pause() -> None:
    """Collector off until `resume()` (a no-op where it is off already)."""
    global _PAUSED
    if gc.isenabled():
        gc.disable()
        _PAUSED = True


def resume() -> None:
    """Freeze everything alive now and turn the collector back on, if `pause()` turned it off."""
    global _PAUSED
    if _PAUSED:
        gc.freeze()
        gc.enable()
        _PAUSED = False


# glibc's malloc hands big freed blocks, and free memory at the top of its heap, back to the
# kernel at once: training on CPU frees and reallocates its activations every step, and the
# kernel zero-fills the same amount of fresh pages each time.
KEEP_FREED_BYTES = 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>


def keep_freed_memory(limit: int = KEEP_FREED_BYTES) -> bool:
    """Keep up to `limit` bytes of freed memory in this process for reuse, and serve blocks
    below it from the heap (glibc's `mallopt`; elsewhere a no-op), at the price of up to
    `limit` more resident memory. For training on CPU (docs/benchmarks.md). Returns whether
    it applied."""
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))


@contextlib.contextmanager
def restored_env(*names: str):
    """The environment variables `names` as they were, once the block is over."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
