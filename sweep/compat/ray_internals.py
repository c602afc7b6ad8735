"""Ray internals a local sweep's start-up and shutdown use (ray 2.60.0; see `sweep.compat`)."""

from __future__ import annotations

import contextlib
import sys

from . import usable

WARM_WORKERS = "warm workers (the stack preloaded in Ray's prestarted workers)"


def local_init_kwargs() -> dict:
    """`ray.init` arguments of a local Ray whose workers preload `sweep.runtime.worker_preload` ({} where Ray's
    version differs: trials then start in fresh workers)."""
    if not usable(WARM_WORKERS, "ray"):
        return {}
    return {
        "_system_config": {
            "preload_python_modules": ["sweep.runtime.worker_preload"],
            # Ray kills idle workers beyond the CPUs left free after a keep-alive of 1 s;
            # Tune's placement groups reserve the CPUs a moment before its trials ask for
            # workers, so the warm ones were killed in that gap (tests/integration/test_speed.py).
            "idle_worker_killing_time_threshold_ms": 10 * 60 * 1000,
        }
    }


@contextlib.contextmanager
def tune_actors_without_runtime_env():
    """Let Ray Tune's trial actors run in the workers a local Ray prestarted.

    Ray Tune 2.60 gives every trainable actor a runtime_env (ray/tune/execution/class_cache.py:
    env_vars PL_DISABLE_FORK=1 for PyTorch Lightning, and a few variables copied from the
    driver), and Ray gives an actor with a runtime_env only a worker started for that
    runtime_env: the prestarted workers sat idle and every trial waited for a fresh process
    to import the stack. A local Ray's workers inherit the driver's environment as it was
    when Ray started, so those env_vars add nothing there."""
    if not usable(WARM_WORKERS, "ray"):
        yield
        return
    from ray.tune.execution import class_cache

    saved = dict(class_cache.DEFAULT_ENV_VARS), class_cache.ENV_VARS_TO_PROPAGATE
    class_cache.DEFAULT_ENV_VARS.clear()
    class_cache.ENV_VARS_TO_PROPAGATE = set()
    try:
        yield
    finally:
        class_cache.DEFAULT_ENV_VARS.update(saved[0])
        class_cache.ENV_VARS_TO_PROPAGATE = saved[1]


def kill_autoscaler_monitor() -> None:
    """Ray 2.60's `ray.shutdown()` of a Ray this process started kills the GCS before the
    autoscaler monitor, whose SIGTERM handler then reports its own "failure" to the dead GCS
    until Ray gives up on it after 1 s (ray/_private/node.py `kill_all_processes`,
    ray/autoscaler/_private/monitor.py `_signal_handler`): every local shutdown took 1 s
    longer. The monitor has nothing to save, so it is killed first. A no-op on a cluster
    joined with `--address`, and where Ray's version differs (shutdown is then 1 s longer)."""
    if not usable("the fast local Ray shutdown", "ray"):
        return
    node = getattr(sys.modules["ray"]._private.worker, "_global_node", None)
    if node is not None:
        node.kill_monitor(check_alive=False)
