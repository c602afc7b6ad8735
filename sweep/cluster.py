"""Ray for a sweep: a local instance, or an existing cluster (`--address` / $RAY_ADDRESS).

`start` connects in a background thread: a local Ray takes ~3 s to come up, mostly waiting
on its processes, and the driver has its MLflow store to open and Ray Tune to import
meanwhile. `ready` waits for it.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

_STARTED: Future | None = None
_STOP = threading.Event()  # set when Ray is shut down: its thread may end
_STOPPING: threading.Thread | None = None  # a shutdown under way in the background


def address_of(address: str | None) -> str | None:
    """The existing cluster to join, or None for a local instance."""
    return address or os.environ.get("RAY_ADDRESS") or None


def set_auth_mode(address: str | None) -> None:
    """Token authentication, set before Ray is imported (Ray reads RAY_AUTH_MODE then).

    A local instance: Ray 2.60 turns token auth on anyway and says so on stderr every time;
    asking for it keeps it on without the line. An explicit address: `ray start --head`
    turns token auth on and keeps the token in ~/.ray/auth_token, but ray.init never enables
    it by itself for an address (ray/_private/worker.py), so `--address` to such a head fails
    with InvalidAuthToken; where a token is at hand, ask for it (tests/test_scale.py)."""
    if "RAY_AUTH_MODE" in os.environ or "ray" in sys.modules:
        return
    if address_of(address) is None:
        os.environ["RAY_AUTH_MODE"] = "token"
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.exists():
        os.environ["RAY_AUTH_MODE"] = "token"


def start(address: str | None = None, verbose: bool = False, quantized: bool = True) -> Future:
    """Connect to (or start) Ray in the background. Workers get HF_HUB_OFFLINE as it is now;
    where no trial loads a quantized model (`quantized` False) they skip bitsandbytes
    (SWEEP_SKIP_BITSANDBYTES, read in sweep/__init__.py)."""
    global _STARTED
    _join_stopping()
    if _STARTED is not None and _STARTED.done() and not (_STARTED.exception() or _ray_is_up()):
        _STARTED = None  # shut down since (by hand): start again
    if _STARTED is None:
        set_auth_mode(address)
        _STOP.clear()
        _STARTED = Future()
        # The thread lives as long as Ray does: Ray's processes are started with
        # PR_SET_PDEATHSIG, which fires when the *thread* that started them ends.
        args = (_STARTED, address_of(address), verbose, quantized)
        threading.Thread(target=_run, args=args, name="ray", daemon=True).start()
    return _STARTED


def ready(address: str | None = None, verbose: bool = False) -> None:
    """Wait until Ray is up (starting it now if `start` was not called); raises what ray.init raised."""
    start(address, verbose).result()


def stop(background: bool = False) -> None:
    """Shut Ray down (after a background start has finished, whether it succeeded or not).
    `background`: in a thread, as the driver writes its reports (~1.3 s saved); a later
    `stop()` or `start()` waits for it."""
    global _STOPPING
    if background:
        if _STOPPING is None:
            _STOPPING = threading.Thread(target=_shutdown, name="ray-stop")
            _STOPPING.start()
        return
    _join_stopping()
    _shutdown()


def _join_stopping() -> None:
    global _STOPPING
    if _STOPPING is not None:
        _STOPPING.join()
        _STOPPING = None


def _shutdown() -> None:
    global _STARTED
    if _STARTED is not None:
        _STARTED.exception()  # waits
        _STARTED = None
    if _ray_is_up():
        sys.modules["ray"].shutdown()
    _STOP.set()


def _ray_is_up() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def _run(started: Future, address: str | None, verbose: bool, quantized: bool) -> None:
    try:
        _init(address, verbose, quantized)
    except BaseException as e:
        started.set_exception(e)
        return
    started.set_result(None)
    _STOP.wait()


def _init(address: str | None, verbose: bool, quantized: bool) -> None:
    import logging

    import ray

    if ray.is_initialized():
        return
    if not verbose:  # `import ray` set its logger's level: quieten it after
        logging.getLogger("ray").setLevel(logging.ERROR)
    env = {
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0"),
        "TOKENIZERS_PARALLELISM": "false",
        "SWEEP_SKIP_BITSANDBYTES": "0" if quantized else "1",  # read as `sweep` is imported
    }
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=verbose)
    else:
        # No runtime_env: a job without one gets its first workers prestarted while the
        # driver is still busy (Ray starts a runtime_env job's workers only when a trial asks
        # for one): ~1 s to the first step on 2 cores. Ray's processes inherit the environment as
        # ray.init starts them; this process gets its own back after.
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            ray.init(include_dashboard=False, log_to_driver=verbose, configure_logging=verbose)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
