"""Many trials logging into one `sweep server` at once: what the tracking store accepts, and what is lost.

    python benchmarks/tracking_load.py                                # 256 trials, sqlite and PostgreSQL
    python benchmarks/tracking_load.py --trials 64 --backend sqlite --sender sync

Each simulated trial is a process of its own (forked from this one once MLflow is imported,
so 256 fit in memory) that logs `--metrics` metrics per step into its own MLflow run, as a
trial with `logging_steps: 1` does: `--paced-s` seconds at `--steps-per-s` steps a second,
then `--burst-steps` steps as fast as it can. `--sender sweep` logs as sweep's trials do
(`MetricSender`: buffered, merged, sent off the logging thread, retried); `--sender sync`
calls `log_batch` once per step and counts each exception as an error the trial sees, as
trials did before.

Printed and written to benchmarks/tracking_load.json, per backend: steps offered and stored
per second, p50/p99 latency of a `log_batch` call, errors the trials saw (sync) or retries
their senders absorbed (sweep), and points lost — counted in the store's own metrics table,
not trusted from the clients. Loopback only; bounded by --paced-s and --give-up-s.
PostgreSQL: Debian's, through scripts/postgres.sh (needs root), or --postgres-uri.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import mlflow  # noqa: F401 — imported before forking, so each trial process shares it
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sweep.record.server import free_port  # noqa: E402
from sweep.trial.metric_sender import MetricSender  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def start_server(store: str, results_dir: Path, workers: int | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "sweep", "server", "--port", str(port), "--results-dir", str(results_dir)]
    cmd += ["--backend-store-uri", store] + (["--workers", str(workers)] if workers else [])
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("MLFLOW_TRACKING_URI="):
        proc.kill()
        raise SystemExit(f"sweep server did not start on {store}")
    return proc, line.split("=", 1)[1]


def make_runs(uri: str, n: int, out: mp.Queue) -> None:
    c = MlflowClient(uri)
    exp = c.create_experiment(f"load-{time.time_ns()}")
    out.put([c.create_run(exp).info.run_id for _ in range(n)])


def one_trial(uri: str, run_id: str, args, start_at: float, out: mp.Queue) -> None:
    """Log like a trial; put its stats on `out`."""
    client = MlflowClient(uri)
    latencies: list[float] = []
    timed = client.log_batch

    def log_batch(*a, **k):
        t = time.perf_counter()
        try:
            return timed(*a, **k)
        finally:
            latencies.append(time.perf_counter() - t)

    client.log_batch = log_batch
    sender = None
    if args.sender == "sweep":
        sender = MetricSender(uri, run_id, give_up_s=args.give_up_s)
        sender.client = client
    errors = lost = 0
    names = [f"train/metric_{i:02d}" for i in range(args.metrics)]
    total = int(args.paced_s * args.steps_per_s) + args.burst_steps
    time.sleep(max(0.0, start_at - time.time()))
    began = time.time()
    for step in range(total):
        if step < total - args.burst_steps:  # paced phase
            time.sleep(max(0.0, began + step / args.steps_per_s - time.time()))
        values = {name: step + i / 100 for i, name in enumerate(names)}
        if sender is not None:
            sender.log(values, step)
            continue
        now = int(time.time() * 1000)
        try:
            client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])
        except Exception:
            errors += 1
            lost += len(values)
    offered_s = time.time() - began
    if sender is not None:
        lost = sender.close()
    out.put(
        {
            "steps": total,
            "offered_s": offered_s,
            "done_s": time.time() - began,
            "latencies": latencies,
            "errors": errors if sender is None else 0,
            "retries": sender.retries if sender is not None else 0,
            "lost_said": lost,
        }
    )


def stored_points(store: str, run_ids: list[str]) -> int:
    """Points the store holds for these runs, counted in MLflow's own table."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(store)
    with engine.connect() as conn:
        q = sqlalchemy.text("SELECT count(*) FROM metrics WHERE run_uuid IN :ids").bindparams(
            sqlalchemy.bindparam("ids", expanding=True)
        )
        return conn.execute(q, {"ids": run_ids}).scalar()


def measure(backend: str, store: str, args, workdir: Path) -> dict:
    proc, uri = start_server(store, workdir / backend, args.workers)
    try:
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        maker = ctx.Process(target=make_runs, args=(uri, args.trials, q))
        maker.start()
        run_ids = q.get(timeout=300)
        maker.join()
        start_at = time.time() + 2 + args.trials / 100  # every process forked before anyone logs
        procs = [ctx.Process(target=one_trial, args=(uri, r, args, start_at, q)) for r in run_ids]
        for p in procs:
            p.start()
        results = [q.get(timeout=args.paced_s + args.give_up_s + 600) for _ in procs]
        for p in procs:
            p.join()
        wall = max(r["done_s"] for r in results)
    finally:
        proc.send_signal(signal.SIGTERM)  # sweep server stops cleanly on it, however this was launched
        proc.wait(timeout=60)
    offered = sum(r["steps"] for r in results)
    stored = stored_points(store, run_ids)
    lat = sorted(x for r in results for x in r["latencies"])
    return {
        "backend": backend,
        "sender": args.sender,
        "trials": args.trials,
        "server_workers": args.workers or (1 if backend == "sqlite" else 4),
        "steps_offered": offered,
        "steps_per_s_offered_paced": args.trials * args.steps_per_s,
        "steps_per_s_stored": round(stored / args.metrics / wall, 1),
        "log_batch_calls": len(lat),
        "log_batch_p50_s": round(statistics.median(lat), 3) if lat else None,
        "log_batch_p99_s": round(lat[int(0.99 * (len(lat) - 1))], 3) if lat else None,
        "trials_with_errors": sum(1 for r in results if r["errors"]),
        "errors_seen_by_trials": sum(r["errors"] for r in results),
        "retries_absorbed": sum(r["retries"] for r in results),
        "points_offered": offered * args.metrics,
        "points_stored": stored,
        "points_lost": offered * args.metrics - stored,
        "points_lost_said_by_trials": sum(r["lost_said"] for r in results),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=256)
    p.add_argument("--metrics", type=int, default=20, help="metrics per step")
    p.add_argument("--steps-per-s", type=float, default=1.0, help="each trial's pace in the paced phase")
    p.add_argument("--paced-s", type=float, default=60.0, help="length of the paced phase")
    p.add_argument("--burst-steps", type=int, default=60, help="steps each trial logs as fast as it can, after")
    p.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--postgres-uri", help="default: the one scripts/postgres.sh makes (database sweep_load)")
    p.add_argument("--workers", type=int, help="server processes (default: sweep server's)")
    p.add_argument("--sender", choices=["sweep", "sync"], default="sweep")
    p.add_argument("--give-up-s", type=float, default=600.0, help="MetricSender's bound")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "tracking_load.json"))
    args = p.parse_args()

    import tempfile

    rows = []
    with tempfile.TemporaryDirectory(prefix="tracking-load-") as tmp:
        workdir = Path(tmp)
        if args.backend in ("sqlite", "both"):
            rows.append(measure("sqlite", f"sqlite:///{workdir / 'load.db'}", args, workdir))
            print(json.dumps(rows[-1]), flush=True)
        if args.backend in ("postgres", "both"):
            uri = args.postgres_uri or _fresh_postgres()
            rows.append(measure("postgres", uri, args, workdir))
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous.setdefault("runs", []).append(
        {"args": vars(args) | {"out": None}, "results": rows, "cpus": os.cpu_count()}
    )
    out.write_text(json.dumps(previous, indent=2) + "\n")


def _fresh_postgres() -> str:
    """An empty database `sweep_load` (dropped and made again), through scripts/postgres.sh."""
    subprocess.run(
        ["runuser", "-u", "postgres", "--", "dropdb", "--if-exists", "sweep_load"], check=True, capture_output=True
    )
    made = subprocess.run([str(ROOT / "scripts" / "postgres.sh"), "sweep_load"], check=True, capture_output=True)
    return made.stdout.decode().strip()


if __name__ == "__main__":
    main()
