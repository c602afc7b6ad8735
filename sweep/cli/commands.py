"""The commands of `python -m sweep <command> ...`: each one plain function of the parsed
arguments, calling the Python API (`sweep.api`) and printing what it returns; its exit code."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from .. import secrets
from ..errors import SpecError
from ..record import ui_view
from ..record.server import credentials, free_port, serve_until_interrupted, shown, start_mlflow_server
from ..record.tracking import resolve_tracking_uri
from ..spec.checks import unusable_inputs
from ..spec.export import field_reference, full_json_schema
from ..spec.load import load_spec
from ..spec.points import describe_axis, point_id
from ..spec.scaffold import spec_from_data
from ..trial.configs import checked_points, config_problem
from ..trial.model import describe_training
from ..trial.scorers import check_functions

EXIT_OK, EXIT_TRIALS_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def cmd_plan(args) -> int:
    """Validate a spec offline and list every trial it would run (or the space it samples)."""
    import pandas as pd

    spec = load_spec(args.spec, args.set)
    functions = [sc for sc in spec.judge.scorers if sc.kind == "function"]
    if args.import_scorers:  # user code runs only when asked: plan is offline validation
        check_functions(spec.judge.scorers, spec.import_paths())

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
    text = field_reference() if args.markdown else json.dumps(full_json_schema(), indent=1)
    if args.output:
        Path(args.output).write_text(text + "\n")
        _say(f"wrote {args.output}")
    else:
        print(text)
    return 0


def cmd_init(args) -> int:
    """Write a first spec for a model and a preference dataset, its layout detected from the columns."""
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
    from .. import api

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
    print(api.report(outcome.sweep))
    return outcome.exit_code


def cmd_report(args) -> int:
    """Per-trial table, best trial per loss type, loss_type x beta pivot; optional plots."""
    from .. import api
    from ..reports.answers import render_samples
    from ..reports.tables import render

    sweep = api.open_sweep(args.name, *_store_of(args))
    found = api.findings(sweep, args.metric, dict(args.objective or []) or None)  # once, for every output
    print(api.report(sweep, fmt=args.format, found=found))
    if args.samples:
        table = api.samples(sweep, top=args.top)
        print("\nsamples: the base model and the top trials, greedy, on held-out prompts\n")
        print(render(table, args.format) if args.format != "table" else render_samples(table))
    if args.plots:
        for path in api.plots(found, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    if args.html:
        path = api.html(found, args.html, top=args.top)
        print(f"wrote {path} (and attached it to the parent run as report/{path.name})", file=sys.stderr)
    return EXIT_OK


def cmd_evaluate(args) -> int:
    """Recompute finished trials' held-out accuracy and margin from their saved adapters."""
    from ..api import evaluate
    from ..reports.tables import render

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
    from ..api import promote

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
    from .. import api

    sweep = api.open_sweep(args.name, args.tracking_uri, args.results_dir)
    df = api.history(sweep) if args.history else api.trials(sweep)
    df.to_csv(args.out, index=False)
    print(f"wrote {len(df)} rows to {args.out}", file=sys.stderr)
    return EXIT_OK


def cmd_compare(args) -> int:
    """The best configurations of two sweeps side by side."""
    from .. import api
    from ..reports.tables import render

    table = api.compare(args.name_a, args.name_b, args.metric, args.top, *_store_of(args))
    for sweep in dict.fromkeys((args.name_a, args.name_b)):
        if sweep not in set(table["sweep"]):
            print(f"{sweep} has no finished trial to compare", file=sys.stderr)
    if not table.empty:
        print(render(table, args.format))
    return EXIT_OK


def cmd_status(args) -> int:
    """Counts, best so far and the running trials' progress, read from MLflow."""
    from .. import api

    print(api.status(args.name, args.tracking_uri, args.results_dir))
    return EXIT_OK


def cmd_logs(args) -> int:
    """Print one trial's full stdout/stderr."""
    from .. import api

    sys.stdout.write(api.logs(args.name, args.trial, *_store_of(args)))
    return EXIT_OK


def cmd_ui(args) -> int:
    """The MLflow UI on the sweeps' store; prints the URL of the sweep's trials, ranked."""
    from .. import api

    uri = _store(args)
    sweep = api.open_sweep(args.name, uri) if args.name else None
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
    from .. import api
    from ..reports.tables import render

    table = api.list_sweeps(*_store_of(args))
    if table.empty:
        print("no sweeps")
        return EXIT_OK
    print(render(table.drop(columns=["experiment_id"]), args.format))
    return EXIT_OK


def _store(args) -> str:
    """The tracking URI for read commands; refuses to invent an empty default store."""
    from ..api import store_uri

    return store_uri(args.tracking_uri, args.results_dir)


def _store_of(args) -> tuple[str | None, str]:
    """(tracking URI, results folder) as a read command was given them, for `sweep.api`."""
    return args.tracking_uri, args.results_dir


def _say(message: str) -> None:
    print(message, flush=True)
