"""Command line: `python -m sweep <command> ...`. Each command is one plain function.

Bad input (a wrong spec, a missing dataset column, ...) prints one line on stderr naming
the field and what is allowed, and exits 2 without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import warnings
from pathlib import Path

from . import secrets
from .checks import unusable_inputs
from .errors import SpecError
from .points import point_id
from .server import PASSWORD, USERNAME
from .spec import load_spec
from .tracking import StoreUnreachable

EXIT_OK, EXIT_TRIALS_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def cmd_plan(args) -> int:
    """Validate a spec offline and list every trial it would run (or the space it samples)."""
    import pandas as pd

    from .model import describe_training
    from .points import describe_axis

    spec = load_spec(args.spec, args.set)
    functions = [sc for sc in spec.judge.scorers if sc.kind == "function"]
    if args.import_scorers:  # user code runs only when asked: plan is offline validation
        from .scorers import check_functions

        check_functions(spec.judge.scorers, spec.import_paths())
    from .trial import checked_points, config_problem  # TRL's own rules across fields: its configs built

    problem = config_problem(spec, checked_points(spec), cuda=spec.resources.gpu != 0)
    if problem:
        raise SpecError(*problem)
    for where, problem in unusable_inputs(spec):  # plan validates specs for elsewhere: a warning, not an error
        print(f"warning: {where}: {problem}", file=sys.stderr)
    print(f"sweep {spec.name}: model {spec.model}, dataset {spec.dataset.path}, ranked by {spec.metric} ({spec.mode})")
    if spec.train:
        print("fixed: " + ", ".join(f"{k}={v}" for k, v in secrets.mask(spec.train).items()))
    print(describe_training(spec))
    points = [p for p in spec.points() if p]
    if points:
        table = pd.DataFrame([{"#": i + 1, **p} for i, p in enumerate(points)])
        if not spec.sampled:
            table["trial_id"] = [point_id(p) for p in points]
        with pd.option_context("display.width", 200, "display.max_rows", 10_000, "display.max_columns", 50):
            print(table.to_string(index=False))
    for name, kind_args in spec.sampled.items():
        print(f"{name}: {describe_axis(kind_args)}")
    n = spec.num_trials()
    if spec.search.method != "grid":
        grid = f" x {len(spec.points())} grid points" if points and spec.search.method == "random" else ""
        print(f"search: {spec.search.method}, {spec.sample_count()} samples{grid}")
    j = spec.judge
    if j.prompts:
        scorers = ", ".join(f"{sc.name} ({sc.kind}: {sc.source}, weight {sc.weight:g})" for sc in j.scorers)
        when = "every evaluation" if j.when == "eval" else "the final evaluation"
        print(f"judge: {j.prompts} held-out prompts at {when}; scorers {scorers}")
        if functions and not args.import_scorers:
            print("judge: module:function scorers are imported when the sweep runs (--import-scorers: now)")
    print(f"{n} {'trial' if n == 1 else 'trials'}")
    s = spec.scheduler
    if s.type == "halving":
        steps = "; ".join(f"at {evals} eval(s) the best {kept} go on" for evals, kept in s.halving_rungs(n))
        print(f"scheduler: halving (synchronous successive halving): {steps or 'no rung (one trial)'}")
    elif s.type != "none":
        print(f"scheduler: {s.type}, grace {s.grace_period} eval(s), reduction factor {s.reduction_factor}")
    return EXIT_OK


def cmd_schema(args) -> int:
    """The spec's JSON Schema (for an editor's completion and inline errors), or its field reference."""
    from .schema_export import field_reference, full_json_schema

    text = field_reference() if args.markdown else json.dumps(full_json_schema(), indent=1)
    if args.output:
        Path(args.output).write_text(text + "\n")
        _say(f"wrote {args.output}")
    else:
        print(text)
    return 0


def cmd_init(args) -> int:
    """Write a first spec for a model and a preference dataset, its layout detected from the columns."""
    from .scaffold import spec_from_data

    made = spec_from_data(args.model, args.dataset, name=args.name, out=args.out)
    out = Path(made.path)
    if out.exists() and not args.force:
        raise SpecError("--out", f"{out} exists; pass --force to overwrite it, or choose another --out")
    out.write_text(made.text, encoding="utf-8")
    for where, problem in unusable_inputs(made.spec):
        print(f"warning: {where}: {problem}", file=sys.stderr)
    print(f"{made.layout} layout; {made.spec.num_trials()} trials; next: python -m sweep plan {out}", file=sys.stderr)
    print(out)
    return EXIT_OK


def cmd_run(args) -> int:
    """Run a sweep: one trial per point on Ray Tune, tracked in MLflow."""
    from . import api

    outcome = api.run(
        args.spec,
        args.set,
        address=args.address,
        log=_say,
        verbose=args.verbose,
        progress_interval=args.progress_interval,
        fresh=args.fresh,
        retry_failed=args.retry_failed,
    )
    from .reports import report

    print(report(outcome.sweep))
    return outcome.exit_code


def cmd_report(args) -> int:
    """Per-trial table, best trial per loss type, loss_type x beta pivot; optional plots."""
    from . import reports, store

    sweep = store.find_sweep(_store(args), args.name)
    found = reports.findings(sweep, args.metric, dict(args.objective or []) or None)  # once, for every output
    print(reports.report(sweep, fmt=args.format, found=found))
    if args.samples:
        table = reports.samples_frame(sweep, top=args.top)
        print("\nsamples: the base model and the top trials, greedy, on held-out prompts\n")
        print(reports.render(table, args.format) if args.format != "table" else reports.render_samples(table))
    if args.plots:
        from .plots import write_plots

        history = reports.history_frame(sweep, metrics=list(reports.CURVES))
        written = write_plots(
            found.trials,
            history,
            found.metric,
            Path(args.plots),
            sweep.name,
            axes=sweep.axes,
            objectives=found.objectives,
        )
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
    if args.html:
        from .html_report import write_html

        path = write_html(sweep, Path(args.html), top=args.top, found=found)
        print(f"wrote {path} (and attached it to the parent run as report/{path.name})", file=sys.stderr)
    return EXIT_OK


def cmd_evaluate(args) -> int:
    """Recompute finished trials' held-out accuracy and margin from their saved adapters."""
    from .api import evaluate
    from .reports import render

    table = evaluate(args.name, args.trial, tracking_uri=args.tracking_uri, results_dir=args.results_dir)
    if table.empty:
        print(f"{args.name} has no finished trial to evaluate", file=sys.stderr)
        return EXIT_OK
    worst = float(table.filter(like="|diff|").max().max())
    print(render(table, args.format))
    print(f"largest difference from the logged values: {worst:.2g} (logged to each run as verified_*)", file=sys.stderr)
    return EXIT_OK if worst <= args.tolerance else EXIT_TRIALS_FAILED


def cmd_promote(args) -> int:
    """Merge the best (or a chosen) trial's adapter into its base model, save it, log it to
    MLflow, and register it where asked."""
    from .api import promote

    promote(
        args.name,
        args.out,
        trial=args.trial,
        register=args.register,
        tracking_uri=args.tracking_uri,
        results_dir=args.results_dir,
        log=lambda m: print(m, file=sys.stderr),
    )
    print(args.out)
    return EXIT_OK


def cmd_export(args) -> int:
    """One CSV row per trial (every swept value and final metric), or per-step history."""
    from . import api

    sweep = api.open_sweep(args.name, args.tracking_uri, args.results_dir)
    df = api.history(sweep) if args.history else api.trials(sweep)
    df.to_csv(args.out, index=False)
    print(f"wrote {len(df)} rows to {args.out}", file=sys.stderr)
    return EXIT_OK


def cmd_compare(args) -> int:
    """The best configurations of two sweeps side by side."""
    from . import reports, store

    uri = _store(args)
    a, b = store.find_sweep(uri, args.name_a), store.find_sweep(uri, args.name_b)
    table = reports.compare(a, b, metric=args.metric, top=args.top)
    for sweep in dict.fromkeys((a.name, b.name)):
        if sweep not in set(table["sweep"]):
            print(f"{sweep} has no finished trial to compare", file=sys.stderr)
    if not table.empty:
        print(reports.render(table, args.format))
    return EXIT_OK


def cmd_status(args) -> int:
    """Counts, best so far and the running trials' progress, read from MLflow."""
    from . import api

    print(api.status(args.name, args.tracking_uri, args.results_dir))
    return EXIT_OK


def cmd_logs(args) -> int:
    """Print one trial's full stdout/stderr."""
    from . import store

    sys.stdout.write(store.trial_log(store.find_sweep(_store(args), args.name), args.trial))
    return EXIT_OK


def cmd_ui(args) -> int:
    """The MLflow UI on the sweeps' store; prints the URL of the sweep's trials, ranked."""
    from . import store, ui_view
    from .server import credentials, free_port, serve_until_interrupted, start_mlflow_server

    uri = _store(args)
    sweep = store.find_sweep(uri, args.name) if args.name else None
    experiment = sweep.experiment_id if sweep else None
    view = ui_view.share(sweep) if sweep else None
    remote = uri.startswith(("http://", "https://"))  # already a tracking server: its UI is right there
    if not remote:
        auth = credentials(args.host, args.trust_network)  # (checked once the store is known to exist)
        port = args.port or free_port(args.host)
        artifacts = Path(args.results_dir).resolve() / "mlartifacts"
        proc = start_mlflow_server(uri, args.host, port, artifacts, auth=auth, echo=args.verbose)
    base = uri.rstrip("/") if remote else f"http://{args.host}:{port}"
    print(ui_view.url(base, experiment, view), flush=True)
    if sweep is not None:
        print(f"judged answers side by side: {ui_view.url(base, experiment, view, 'answers')}", file=sys.stderr)
        print(f"models: {ui_view.url(base, experiment, view, 'models')}", file=sys.stderr)
    if remote:
        return EXIT_OK
    print(f"MLflow UI on {uri}; Ctrl-C to stop", file=sys.stderr)
    return serve_until_interrupted(proc)


def cmd_server(args) -> int:
    """A tracking server for sweeps whose trials run in other processes or on other nodes."""
    from .server import credentials, serve_until_interrupted, shown, start_mlflow_server
    from .tracking import resolve_tracking_uri

    auth = credentials(args.host, args.trust_network)
    store = resolve_tracking_uri(args.backend_store_uri, args.results_dir)
    Path(args.results_dir).mkdir(parents=True, exist_ok=True)
    proc = start_mlflow_server(
        store, args.host, args.port, Path(args.results_dir).resolve() / "mlartifacts", args.workers, auth=auth
    )
    print(f"tracking server on {shown(store)}", file=sys.stderr)
    reachable = socket.gethostname() if args.host in ("0.0.0.0", "::") else args.host  # what other nodes dial
    print(f"MLFLOW_TRACKING_URI=http://{reachable}:{args.port}", flush=True)
    return serve_until_interrupted(proc)


def cmd_list(args) -> int:
    """Sweeps in the store with trial counts and status."""
    import pandas as pd

    from . import reports, store

    rows = store.list_sweeps(_store(args))
    if not rows:
        print("no sweeps")
        return EXIT_OK
    print(reports.render(pd.DataFrame(rows).drop(columns=["experiment_id"]), args.format))
    return EXIT_OK


def _store(args) -> str:
    """The tracking URI for read commands; refuses to invent an empty default store."""
    from .api import store_uri

    return store_uri(args.tracking_uri, args.results_dir)


def _say(message: str) -> None:
    print(message, flush=True)


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
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("init", help="write a first spec from a model and a preference dataset")
    p.add_argument("--model", default="builtin:tiny", help="hub id or local model directory (default: builtin:tiny)")
    p.add_argument(
        "--dataset", required=True, help="local .jsonl/.json/.parquet/.csv file, saved dataset dir, or hub id"
    )
    p.add_argument("--name", help="sweep name (default: from the dataset's name)")
    p.add_argument("--out", help="spec file to write (default: <name>.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=cmd_init)

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
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("schema", help="the spec's JSON Schema, for editors (completion, inline errors)")
    p.add_argument("--output", "-o", help="write it to this file instead of stdout")
    p.add_argument("--markdown", action="store_true", help="the field reference (docs/spec.md) instead")
    p.set_defaults(func=cmd_schema)

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
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("evaluate", help="recompute finished trials' held-out metrics from their saved adapters")
    p.add_argument("name", help="sweep name")
    p.add_argument("--trial", help="one trial (run name, trial id or run id); default: every finished trial")
    p.add_argument(
        "--tolerance", type=float, default=1e-3, help="exit 1 if a recomputed value differs more (default: 1e-3)"
    )
    store_options(p)
    p.set_defaults(func=cmd_evaluate)

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
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("export", help="write a sweep's trials (or --history) as CSV")
    p.add_argument("name", help="sweep name")
    p.add_argument("--out", required=True, help="CSV file to write")
    p.add_argument("--history", action="store_true", help="per-step metrics in long form instead of one row per trial")
    store_options(p, formats=False)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("compare", help="the best configurations of two sweeps side by side")
    p.add_argument("name_a")
    p.add_argument("name_b")
    p.add_argument("--metric", help="metric to rank by (default: the first sweep's)")
    p.add_argument("--top", type=int, default=3, help="configurations per sweep (default: 3)")
    store_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("status", help="where a sweep stands (works from another terminal while it runs)")
    p.add_argument("name", help="sweep name")
    store_options(p, formats=False)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("logs", help="a trial's full stdout/stderr")
    p.add_argument("name", help="sweep name")
    p.add_argument("trial", help="run name (e.g. 'loss_type=ipo,beta=0.1'), trial id, or run id")
    store_options(p, formats=False)
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("ui", help="the MLflow UI on the sweeps' store (127.0.0.1 unless --host)")
    p.add_argument("name", nargs="?", help="sweep whose runs table to open")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--verbose", action="store_true", help="show the MLflow server's own notices and warnings")
    trust_network(p)
    store_options(p, formats=False)
    p.set_defaults(func=cmd_ui)

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
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("list", help="sweeps in the store with trial counts and status")
    store_options(p)
    p.set_defaults(func=cmd_list)
    return parser


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
        from .progress import disk_full

        full = disk_full(e)
        if not full:
            raise
        print(f"error: {full}: free space, then run the same command again", file=sys.stderr, flush=True)
        return EXIT_TRIALS_FAILED


def _objective(value: str) -> tuple[str, str]:
    metric, _, how = value.rpartition(":")
    if not metric or how not in ("max", "min"):
        raise argparse.ArgumentTypeError(f"{value!r}: an objective is METRIC:max or METRIC:min")
    return metric, how


def _registered_name(value: str) -> str:
    from .logged_models import registered_name

    try:
        return registered_name(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _bad_input(e: Exception) -> None:
    """One line on stderr naming the field and what is allowed; no traceback."""
    print(f"error: {e}", file=sys.stderr, flush=True)


def _quiet_libraries(verbose: bool = False) -> None:
    """Library chatter belongs in trial logs, not on the sweep's console."""
    from .startup import QUIET_ENV

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
