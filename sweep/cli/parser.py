"""The command line's arguments: one sub-command per `cmd_*` function of `commands.py`."""

from __future__ import annotations

import argparse

from ..record.logged_models import registered_name
from ..record.server import PASSWORD, USERNAME
from . import commands


class _Parser(argparse.ArgumentParser):
    """Bad arguments are bad input: one line naming the argument, exit 2 (`-h` shows the usage)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m sweep", description="Hyperparameter sweeps for DPO and its family.")
    sub = parser.add_subparsers(dest="command", required=True)

    def overrides(p):
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a spec field, checked like the file: train.max_steps=5, axes.beta=[0.1,0.5] "
            "(YAML values; repeatable; recorded with the spec)",
        )

    p = sub.add_parser("run", help="run a sweep")
    p.add_argument("spec", help="sweep spec (YAML)")
    p.add_argument("--address", help="existing Ray cluster to run on (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--verbose", action="store_true", help="let Ray's and the trials' own output through to the console")
    p.add_argument("--fresh", action="store_true", help="start over under a new parent run instead of resuming")
    p.add_argument("--retry-failed", action="store_true", help="when resuming, run failed trials again")
    p.add_argument(
        "--progress-interval",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds between status lines when the output is not a terminal (default: 30)",
    )
    overrides(p)
    p.set_defaults(func=commands.cmd_run)

    p = sub.add_parser("init", help="write a first spec from a model and a preference dataset")
    p.add_argument("--model", default="builtin:tiny", help="hub id or local model directory (default: builtin:tiny)")
    p.add_argument(
        "--dataset", required=True, help="local .jsonl/.json/.parquet/.csv file, saved dataset dir, or hub id"
    )
    p.add_argument("--name", help="sweep name (default: from the dataset's name)")
    p.add_argument("--out", help="spec file to write (default: <name>.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=commands.cmd_init)

    def trust_network(p):
        p.add_argument(
            "--trust-network",
            action="store_true",
            help=f"serve a non-loopback --host without authentication (else {USERNAME} and {PASSWORD} are required)",
        )

    p = sub.add_parser("plan", help="validate a spec offline and list its trials")
    p.add_argument("spec", help="sweep spec (YAML)")
    p.add_argument(
        "--import-scorers", action="store_true", help="import module:function scorers (their code runs) and check them"
    )
    overrides(p)
    p.set_defaults(func=commands.cmd_plan)

    p = sub.add_parser("schema", help="the spec's JSON Schema, for editors (completion, inline errors)")
    p.add_argument("--output", "-o", help="write it to this file instead of stdout")
    p.add_argument("--markdown", action="store_true", help="the field reference (docs/spec.md) instead")
    p.set_defaults(func=commands.cmd_schema)

    def store_options(p, formats=True):
        p.add_argument(
            "--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else <results-dir>/mlflow.db)"
        )
        p.add_argument(
            "--results-dir", default="results", help="where the default sqlite store lives (default: results)"
        )
        if formats:
            p.add_argument("--format", choices=["table", "markdown", "json"], default="table")

    p = sub.add_parser("report", help="tables (and plots) of a sweep, read from MLflow")
    p.add_argument("name", help="sweep name (the spec's `name`)")
    p.add_argument("--metric", help="metric to rank and pivot by (default: the spec's metric)")
    p.add_argument("--plots", metavar="DIR", help="also write PNG figures to DIR")
    p.add_argument("--html", metavar="FILE", help="also write the whole report, figures embedded, as one HTML page")
    p.add_argument(
        "--samples", action="store_true", help="also show the top trials' generations beside the base model's"
    )
    p.add_argument("--top", type=int, default=3, help="trials whose samples to show (default: 3)")
    p.add_argument(
        "--objective",
        action="append",
        type=_objective,
        metavar="METRIC:max|min",
        help="an objective of the Pareto front, repeatable (default: the ranking metric and, where judged, "
        "eval_judge/length:min)",
    )
    store_options(p)
    p.set_defaults(func=commands.cmd_report)

    p = sub.add_parser("evaluate", help="recompute finished trials' held-out metrics from their saved adapters")
    p.add_argument("name", help="sweep name")
    p.add_argument("--trial", help="one trial (run name, trial id or run id); default: every finished trial")
    p.add_argument(
        "--tolerance", type=float, default=1e-3, help="exit 1 if a recomputed value differs more (default: 1e-3)"
    )
    store_options(p)
    p.set_defaults(func=commands.cmd_evaluate)

    p = sub.add_parser("promote", help="merge the best trial's adapter into its base model and save it")
    p.add_argument("name", help="sweep name")
    p.add_argument("--trial", help="trial to promote (default: the best by the sweep's metric)")
    p.add_argument("--out", required=True, help="directory for the merged model and tokenizer")
    p.add_argument(
        "--register",
        metavar="NAME",
        type=_registered_name,
        help="also register the merged model in MLflow's Model Registry as NAME, alias `best`",
    )
    store_options(p, formats=False)
    p.set_defaults(func=commands.cmd_promote)

    p = sub.add_parser("export", help="write a sweep's trials (or --history) as CSV")
    p.add_argument("name", help="sweep name")
    p.add_argument("--out", required=True, help="CSV file to write")
    p.add_argument("--history", action="store_true", help="per-step metrics in long form instead of one row per trial")
    store_options(p, formats=False)
    p.set_defaults(func=commands.cmd_export)

    p = sub.add_parser("compare", help="the best configurations of two sweeps side by side")
    p.add_argument("name_a")
    p.add_argument("name_b")
    p.add_argument("--metric", help="metric to rank by (default: the first sweep's)")
    p.add_argument("--top", type=int, default=3, help="configurations per sweep (default: 3)")
    store_options(p)
    p.set_defaults(func=commands.cmd_compare)

    p = sub.add_parser("status", help="where a sweep stands (works from another terminal while it runs)")
    p.add_argument("name", help="sweep name")
    store_options(p, formats=False)
    p.set_defaults(func=commands.cmd_status)

    p = sub.add_parser("logs", help="a trial's full stdout/stderr")
    p.add_argument("name", help="sweep name")
    p.add_argument("trial", help="run name (e.g. 'loss_type=ipo,beta=0.1'), trial id, or run id")
    store_options(p, formats=False)
    p.set_defaults(func=commands.cmd_logs)

    p = sub.add_parser("ui", help="the MLflow UI on the sweeps' store (127.0.0.1 unless --host)")
    p.add_argument("name", nargs="?", help="sweep whose runs table to open")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--verbose", action="store_true", help="show the MLflow server's own notices and warnings")
    trust_network(p)
    store_options(p, formats=False)
    p.set_defaults(func=commands.cmd_ui)

    p = sub.add_parser("server", help="an MLflow tracking server for multi-process and multi-node sweeps")
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1; 0.0.0.0 for other nodes)"
    )
    p.add_argument("--port", type=int, default=5000)
    trust_network(p)
    p.add_argument(
        "--backend-store-uri",
        help="where runs are stored: sqlite at <results-dir>/mlflow.db by default; a postgresql:// URI "
        "(scripts/postgres.sh makes one) for sweeps with tens of trials logging at once",
    )
    p.add_argument("--workers", type=int, help="server processes (default: 1 on sqlite, 4 on a database server)")
    p.add_argument("--results-dir", default="results")
    p.set_defaults(func=commands.cmd_server)

    p = sub.add_parser("list", help="sweeps in the store with trial counts and status")
    store_options(p)
    p.set_defaults(func=commands.cmd_list)
    return parser


def _objective(value: str) -> tuple[str, str]:
    metric, _, how = value.rpartition(":")
    if not metric or how not in ("max", "min"):
        raise argparse.ArgumentTypeError(f"{value!r}: an objective is METRIC:max or METRIC:min")
    return metric, how


def _registered_name(value: str) -> str:
    try:
        return registered_name(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
