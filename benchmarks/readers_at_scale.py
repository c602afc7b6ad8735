"""How fast the record of a 1,000-trial sweep is read. Run by hand, not in CI:

    python benchmarks/readers_at_scale.py --vs HEAD~1    # ~5 min on 2 cores; writes benchmarks/readers_at_scale.json

Builds the record once (in `--work`, kept for reruns): a real 2-trial run of the default sweep
(`beta_grid.yaml`, beta 0.1: its metrics, judge included, every step), then a sweep of `--trials`
trials whose runs copy those two trials' params, tags and every metric point (each value moved a
little, so rankings and importances have something to rank), as MLflow holds them after a
1,000-trial sweep. Then `export --history`, `report`, `status` and `report --html` on it, each in
a fresh process, alternated with the same commands of the code at `--vs` (a git revision, checked
out aside): the ratio of each pair is what the JSON keeps beside the times.
`benchmarks/render.py` renders docs/benchmarks.md's table from the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "readers_at_scale.json"
NAME = "readers_at_scale"
TARGETS_S = {"export --history": 10.0, "report": 5.0, "status": 3.0}  # the targets, on 2 cores
COMMANDS = {
    "export --history": ["export", NAME, "--history", "--out", "history.csv"],
    "report": ["report", NAME],
    "status": ["status", NAME],
    "report --html": ["report", NAME, "--html", "report.html"],
}


def build_record(work: Path, trials: int) -> None:
    """The template sweep (real), then `trials` runs copied from its two trials."""
    sys.path.insert(0, str(REPO))
    from mlflow.entities import Metric, Param

    from sweep import api
    from sweep.record import tracking

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    spec = REPO / "search_spaces" / "beta_grid.yaml"
    subprocess.run(
        [sys.executable, "-m", "sweep", "run", str(spec), "--set", "axes.beta=[0.1]", "--set", "name=template"],
        cwd=work, env=env, check=True, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    uri = tracking.default_tracking_uri(work / "results")
    c = tracking.client(uri)
    template = api.open_sweep("template", uri)
    models = template.runs()
    histories = {
        run.info.run_id: [m for key in run.data.metrics for m in c.get_metric_history(run.info.run_id, key)]
        for run in models
    }
    betas = [round(0.001 * (i + 1), 4) for i in range(trials // 2)]
    big = api.load(str(spec), [f"name={NAME}", f"axes.beta={betas}"])
    experiment_id = tracking.ensure_experiment(uri, NAME, big.results_path("mlartifacts"))
    parent = tracking.start_parent_run(uri, experiment_id, big)
    rng = random.Random(0)
    for i, point in enumerate(big.points()):
        model = models[i % len(models)]
        tags = {**model.data.tags, "mlflow.parentRunId": parent, tracking.TAG_SWEEP: NAME}
        tags[tracking.TAG_TRIAL_ID] = f"t{i:05d}"
        tags[tracking.TAG_POINT] = tags["mlflow.runName"] = f"loss_type={point['loss_type']},beta={point['beta']}"
        tags[tracking.TAG_LOSS] = point["loss_type"]
        run = c.create_run(experiment_id, run_name=tags[tracking.TAG_POINT], tags=tags)
        params = {**model.data.params, **tracking.flat_params(point, tracking.SWEPT_PREFIX)}
        shift = rng.uniform(-0.2, 0.2)
        points = [Metric(m.key, m.value * (1 + shift), m.timestamp, m.step) for m in histories[model.info.run_id]]
        c.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
        for start in range(0, len(points), 1000):  # MLflow's limit per batch
            c.log_batch(run.info.run_id, metrics=points[start : start + 1000])
        c.set_terminated(run.info.run_id, "FINISHED")
    c.set_terminated(parent, "FINISHED")


def timed(python: str, repo: Path, work: Path, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.monotonic()
    subprocess.run([python, "-m", "sweep", *args], cwd=work, env=env, check=True, capture_output=True, timeout=900)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sweep-readers-at-scale")
    parser.add_argument("--vs", help="a git revision: its readers timed side by side with these")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if not (args.work / "results" / "mlflow.db").exists():
        start = time.monotonic()
        build_record(args.work, args.trials)
        print(f"record of {args.trials} trials built in {time.monotonic() - start:.0f} s", flush=True)
    sides = {"this": REPO}
    if args.vs:
        aside = Path(tempfile.mkdtemp(prefix="sweep-vs-"))
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(aside), args.vs], cwd=REPO, check=True)
        sides["vs"] = aside
    times: dict[str, dict[str, list[float]]] = {name: {side: [] for side in sides} for name in COMMANDS}
    try:
        for _ in range(args.repeats):
            for name, command in COMMANDS.items():
                for side, repo in sides.items():  # A B, A B: pairs measured under the same load
                    times[name][side].append(round(timed(sys.executable, repo, args.work, command), 2))
                print(name, {side: times[name][side][-1] for side in sides}, flush=True)
    finally:
        if args.vs:
            subprocess.run(["git", "worktree", "remove", "--force", str(sides["vs"])], cwd=REPO, check=False)
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "trials": args.trials,
        "repeats": args.repeats,
        "vs": args.vs,
        "targets_s": TARGETS_S,
        "commands": {
            name: {
                "command": "python -m sweep " + " ".join(COMMANDS[name]),
                "median_s": round(statistics.median(times[name]["this"]), 2),
                **(
                    {
                        "vs_median_s": round(statistics.median(times[name]["vs"]), 2),
                        "speedup": round(statistics.median(v / t for t, v in zip(*times[name].values())), 2),
                    }
                    if args.vs
                    else {}
                ),
                "runs_s": times[name],
            }
            for name in COMMANDS
        },
    }
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
