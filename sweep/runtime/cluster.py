"""Ray for a sweep: a local instance, or an existing cluster (`--address` / $RAY_ADDRESS).

`start` connects in a background thread: a local Ray spends its start-up mostly waiting on
its processes, and the driver imports what it needs meanwhile (it waits before loading
the data, whose threads must not race Ray's forks: orchestrate.run_sweep). `ready` waits for it.

A local Ray prestarts one worker per CPU, and as many as trials may run at once import what
a trial needs as they start (sweep/runtime/worker_preload.py), on the cores the driver leaves idle;
`trials_on_prestarted_workers` makes Ray Tune's trials run in those workers rather than in
fresh ones.

A Ray this process had already started itself (`ray.init()` in a notebook) is used as it is
and left running: only what `start` started or connected, `stop` shuts down.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import sys
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path

from ..compat import ray_internals
from ..errors import SpecError
from .startup import restored_env

WARM_PREFIX = "sweep-warm-"  # + the driver's pid: <tmp>/sweep-warm-<pid>-<random>


class RayConnection:
    """This process's Ray as `start` left it. Ray is one per process, and so is this object
    (`_RAY`); the module's `start`, `ready` and `stop` are its methods."""

    def __init__(self):
        self.started: Future | None = None  # the background start: done when Ray is up (or failed)
        self.skips_bitsandbytes = False  # whether the local Ray's workers were started without bitsandbytes
        self.warm_dir: str | None = None  # the local Ray's warm-worker slots (sweep/runtime/worker_preload.py)
        self.stop_event = threading.Event()  # set when Ray is shut down: its thread may end
        self.own = False  # whether `start` called ray.init (else Ray was up already: someone else's to stop)

    def start(
        self, address: str | None = None, verbose: bool = False, quantized: bool | None = None, warm_workers: int = 0
    ) -> Future:
        """Connect to (or start) Ray in the background. Workers get HF_HUB_OFFLINE as it is now;
        where no trial loads a quantized model (`quantized` False) they skip bitsandbytes
        (SWEEP_SKIP_BITSANDBYTES, read in sweep/__init__.py). `quantized` None: as already
        started, or True. A local Ray's first `warm_workers` workers import the trial stack as
        they start (sweep/runtime/worker_preload.py)."""
        if self.started is not None and self.started.done() and not (self.started.exception() or _ray_is_up()):
            self.started = None  # shut down since (by hand): start again
        if self.started is not None and quantized and self.skips_bitsandbytes:
            # started early on a guess (`may_have_cuda`) that this sweep proved wrong: its workers lack bitsandbytes
            self.stop()
        if self.started is None:
            set_auth_mode(address)
            self.stop_event.clear()
            self.started = Future()
            self.skips_bitsandbytes = quantized is False and not address_of(address)
            # The thread lives as long as Ray does: Ray's processes are started with
            # PR_SET_PDEATHSIG, which fires when the *thread* that started them ends.
            args = (self.started, address_of(address), verbose, quantized is not False, warm_workers)
            threading.Thread(target=self._run, args=args, name="ray", daemon=True).start()
        return self.started

    def ready(self, address: str | None = None, verbose: bool = False) -> None:
        """Wait until Ray is up (starting it now if `start` was not called); raises what ray.init
        raised, but a cluster that cannot be joined (`auto` with none running, `ray://` refused)
        as a SpecError naming where the address came from."""
        try:
            self.start(address, verbose).result()
        except ConnectionError as e:
            if not address_of(address):
                raise
            raise SpecError(
                _address_field(address), f"cannot join a Ray cluster at {address_of(address)}: {str(e).splitlines()[0]}"
            ) from None

    def stop(self) -> None:
        """Shut Ray down (after a background start has finished, whether it succeeded or not),
        in this thread: a Ray handle freed while a shutdown is in progress ends the process."""
        if self.started is not None:
            self.started.exception()  # waits
            self.started = None
        if _ray_is_up() and self.own:
            ray_internals.kill_autoscaler_monitor()
            sys.modules["ray"].shutdown()
        self.own = False
        if self.warm_dir:
            shutil.rmtree(self.warm_dir, ignore_errors=True)
            self.warm_dir = None
        self.stop_event.set()

    def _run(self, started: Future, address: str | None, verbose: bool, quantized: bool, warm_workers: int) -> None:
        try:
            self._init(address, verbose, quantized, warm_workers)
        except BaseException as e:
            started.set_exception(e)
            return
        started.set_result(None)
        self.stop_event.wait()

    def _init(self, address: str | None, verbose: bool, quantized: bool, warm_workers: int) -> None:
        import logging

        import ray

        if ray.is_initialized():
            return
        self.own = True
        if not verbose:  # `import ray` set its logger's level: quieten it after
            logging.getLogger("ray").setLevel(logging.ERROR)
        env = {
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0"),
            "TOKENIZERS_PARALLELISM": "false",
            "SWEEP_SKIP_BITSANDBYTES": "0" if quantized else "1",  # read as `sweep` is imported
        }
        if address:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=verbose, configure_logging=verbose)
        else:
            # No runtime_env: Ray prestarts workers only for a job without one. Ray's processes
            # inherit the environment as ray.init starts them; this process gets its own back after.
            _remove_stale_warm_dirs()
            self.warm_dir = tempfile.mkdtemp(prefix=f"{WARM_PREFIX}{os.getpid()}-")
            env.update(SWEEP_WARM_DIR=self.warm_dir, SWEEP_WARM_WORKERS=str(warm_workers))
            with restored_env(*env):
                os.environ.update(env)
                ray.init(
                    include_dashboard=False,
                    log_to_driver=verbose,
                    configure_logging=verbose,
                    **ray_internals.local_init_kwargs(),  # the warm workers' preload
                )


_RAY = RayConnection()
start, ready, stop = _RAY.start, _RAY.ready, _RAY.stop


def address_of(address: str | None) -> str | None:
    """The existing cluster to join, or None for a local instance."""
    return address or os.environ.get("RAY_ADDRESS") or None


def check_reachable(address: str | None, timeout_s: float = 10.0) -> None:
    """The cluster to join answers at its address, or a SpecError says so: `ray.init` retries
    an address where nothing listens without end. Only HOST:PORT is probed (`auto` and
    `ray://` addresses are Ray's own to resolve)."""
    target = address_of(address)
    if not target or target in ("auto", "local") or "://" in target:
        return
    field = _address_field(address)
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise SpecError(
            field, f"{target!r} is not HOST:PORT (a Ray head's address, e.g. 10.0.0.1:6379), 'auto' or ray://"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        why = f"no answer in {timeout_s:g} s" if isinstance(e, TimeoutError) else (e.strerror or str(e)).lower()
        raise SpecError(
            field,
            f"no Ray cluster answers at {target} ({why}): start one with `ray start --head`, "
            "or leave --address and $RAY_ADDRESS unset for a local Ray",
        ) from None


def _address_field(address: str | None) -> str:
    """Where the address an error names came from: the command line, else the environment."""
    return "--address" if address else "RAY_ADDRESS"


def set_auth_mode(address: str | None) -> None:
    """Token authentication, set before Ray is imported (Ray reads RAY_AUTH_MODE then).

    A local instance: Ray 2.60 turns token auth on anyway and says so on stderr every time;
    asking for it keeps it on without the line. An explicit address: `ray start --head`
    turns token auth on and keeps the token in ~/.ray/auth_token, but ray.init never enables
    it by itself for an address (ray/_private/worker.py), so `--address` to such a head fails
    with InvalidAuthToken; where a token is at hand, ask for it (tests/integration/test_scale.py)."""
    if "RAY_AUTH_MODE" in os.environ or "ray" in sys.modules:
        return
    if address_of(address) is None:
        os.environ["RAY_AUTH_MODE"] = "token"
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.exists():
        os.environ["RAY_AUTH_MODE"] = "token"


def trials_at_once(spec) -> int:
    """How many trials of a (validated) spec may run at once on a local Ray here: one per GPU
    (per `resources.gpu` share of one) where there are GPUs, else one per `resources.cpu`
    CPUs, at most `max_concurrent_trials` and the sweep's trials. It sizes the warm workers:
    a wrong guess costs speed only (a worker nobody uses imports the whole stack for nothing)."""
    gpus = len(glob.glob("/dev/nvidia[0-9]*")) if may_have_cuda() else 0
    per_gpu = spec.resources.gpu  # None: one GPU per trial where there are GPUs
    if gpus and per_gpu != 0:
        n = int(gpus / (per_gpu or 1))
    else:
        n = int((os.cpu_count() or 1) / spec.resources.cpu)
    n = min(n, spec.num_trials())
    cap = spec.max_concurrent_trials
    return max(1, min(n, cap) if cap else n)


def may_have_cuda() -> bool:
    """Whether torch may find a GPU here, without importing torch (seconds): an NVIDIA or AMD
    device node. Errs on the side of yes: a wrong yes only costs the workers an import."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd"))


@contextlib.contextmanager
def trials_on_prestarted_workers(address: str | None):
    """Let Ray Tune's trial actors run in the workers a local Ray prestarted (and preloaded)
    rather than in fresh ones (`compat.ray_internals`); with `--address` Tune's behaviour is
    kept. tests/integration/test_speed.py checks both sides."""
    if address_of(address):
        yield
        return
    with ray_internals.tune_actors_without_runtime_env():
        yield


def _remove_stale_warm_dirs() -> None:
    """The warm-worker folders of local Rays whose driver is gone without cleaning up (killed
    with SIGKILL, or by the OOM killer): named after the driver's pid, removed when it is dead."""
    for path in Path(tempfile.gettempdir()).glob(f"{WARM_PREFIX}*-*"):
        pid = path.name.removeprefix(WARM_PREFIX).split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _ray_is_up() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()
