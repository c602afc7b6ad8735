"""Command line: `python -m sweep <command> ...`. Each command is one plain function.

Bad input (a wrong spec, a missing dataset column, ...) prints one line on stderr naming
the field and what is allowed, and exits 2 without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from .spec import SpecError, load_spec, point_id, point_label

EXIT_OK, EXIT_TRIALS_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def cmd_plan(args) -> int:
    """Validate a spec offline and list every trial it would run."""
    spec = load_spec(args.spec)
    points = spec.points()
    print(f"sweep {spec.name}: model {spec.model}, dataset {spec.dataset.path}, ranked by {spec.metric} ({spec.mode})")
    if spec.train:
        print("fixed: " + ", ".join(f"{k}={v}" for k, v in spec.train.items()))
    import pandas as pd

    table = pd.DataFrame([{"#": i + 1, **p, "trial_id": point_id(p)} for i, p in enumerate(points)])
    with pd.option_context("display.width", 200, "display.max_rows", 10_000, "display.max_columns", 50):
        print(table.to_string(index=False))
    print(f"{len(points)} {'trial' if len(points) == 1 else 'trials'}")
    return EXIT_OK


def cmd_run(args) -> int:
    """Run a sweep: one trial per point on Ray Tune, tracked in MLflow."""
    spec = load_spec(args.spec)
    if spec.model.startswith("builtin:") and spec.dataset.path.startswith("builtin:"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing to fetch: never reach for a hub
    from .orchestrate import run_sweep
    from .reports import format_summary

    outcome = run_sweep(spec, address=args.address, log=_say)
    print(format_summary(outcome.summary))
    return EXIT_TRIALS_FAILED if outcome.exit_code else EXIT_OK


def _say(message: str) -> None:
    print(message, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sweep", description="Hyperparameter sweeps for DPO and its family.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a sweep")
    p.add_argument("spec", help="sweep spec (YAML)")
    p.add_argument("--address", help="existing Ray cluster to run on (default: $RAY_ADDRESS, else a local Ray)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("plan", help="validate a spec offline and list its trials")
    p.add_argument("spec", help="sweep spec (YAML)")
    p.set_defaults(func=cmd_plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return args.func(args)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    """Library chatter belongs in trial logs, not on the sweep's console."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no box tables on the console
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    for name in ("transformers", "datasets", "bitsandbytes", "ray", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
