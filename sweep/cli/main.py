"""`python -m sweep`: the arguments parsed, the command run, and how it ended as an exit code.

Bad input (a wrong spec, a missing dataset column, ...) prints one line on stderr naming
the field and what is allowed, and exits 2 without a traceback; an interruption exits 130."""

from __future__ import annotations

import logging
import os
import sys
import warnings

from ..driver.failures import disk_full
from ..errors import SpecError
from ..record.tracking import StoreUnreachable
from ..runtime.startup import QUIET_ENV
from .commands import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TRIALS_FAILED
from .parser import build_parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries(getattr(args, "verbose", False))
    try:
        return args.func(args)
    except (SpecError, LookupError) as e:  # LookupError: store.SweepNotFound
        _bad_input(e)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except StoreUnreachable as e:  # a sweep's end could not be recorded: one line, not MLflow's HTTP error
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_TRIALS_FAILED
    except Exception as e:
        full = disk_full(e)
        if not full:
            raise
        print(f"error: {full}: free space, then run the same command again", file=sys.stderr, flush=True)
        return EXIT_TRIALS_FAILED


def _bad_input(e: Exception) -> None:
    """One line on stderr naming the field and what is allowed; no traceback."""
    print(f"error: {e}", file=sys.stderr, flush=True)


def _quiet_libraries(verbose: bool = False) -> None:
    """Library chatter belongs in trial logs, not on the sweep's console."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    if verbose:
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # mlflow sets its loggers' level when imported
    # Library warnings of every kind (Future, User, urllib3's DependencyWarning as Ray starts, ...);
    # --verbose shows them.
    warnings.simplefilter("ignore")
    for name in ("transformers", "datasets", "bitsandbytes", "ray", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # A store error is raised to sweep, which says it in one line; MLflow's log of it is a traceback.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # "Loading weights" bars in evaluate/promote
    if "datasets" in sys.modules:  # imported already (e.g. in-process use): the env var came too late
        sys.modules["datasets"].disable_progress_bars()
