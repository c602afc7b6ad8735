"""How much cheaper is a sweep with `sweep` than the naive way? Run by hand, not in CI:

    python benchmarks/sweep_speedup.py            # ~15 min on 2 cores; writes benchmarks/sweep_speedup.json

On the embedded default, one 16-point grid (loss_type x beta x learning_rate x max_steps),
the same data, data order and seeds, in four modes on this machine, two trials at a time:

- naive: one fresh process per point running a plain TRL DPOTrainer script
  (benchmarks/naive_dpo.py): imports, model load, tokenisation, reference computed inline;
- sweep: `python -m sweep run` (warm Ray workers keeping the base model loaded, reference
  log-probs computed once and shared), scheduler off;
- asha: the same grid with `scheduler: {type: asha}`, with rungs at every 15-step eval, at
  every 5-step eval, and with max_steps as ASHA's resource instead of an axis (every trial
  may run to 60 steps): training steps saved, and regret;
- halving: the same with `scheduler: {type: halving}` (synchronous successive halving), on
  the grid and with max_steps as the resource;
- kto: two KTO points as `sweep run` with `share_reference: false` (reference computed
  inline at every step, as TRL does) and true (one shared pass): step time, identical metrics.

It prints wall times, `speedup = naive / sweep`, the per-phase split, `efficiency = lower
bound / sweep` and checks every trial's final loss, rewards/margins and rewards/accuracies
agree between naive and sweep within 1e-4. The lower bound is what any way of running the
grid on this machine must spend: the one-time preparation (one process's start-up, model
load and tokenisation, as the naive runs measured them, and one reference pass over the
rows training reads) plus the policy-only training time of all trials divided by the
concurrency. `efficiency_excluding_start_up` leaves the process start-up out of it.

Identical naive runs on this VM have taken 129-155 s, more than the gains being measured:
naive and sweep run `--repeats` times, alternated; the JSON holds each pair's figures, their
medians, and the median pair's phases in detail. The schedulers and KTO run once.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CONCURRENCY = 2  # = the cores of the reference machine; sweep runs cpu: 1 per trial
AXES = {"loss_type": ["sigmoid", "ipo"], "beta": [0.1, 0.5], "learning_rate": [5.0e-4, 1.0e-3], "max_steps": [30, 60]}
TRAIN = {
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 50,
    "warmup_steps": 3,
    "max_length": 128,
    "logging_steps": 5,
    "eval_strategy": "steps",
    "eval_steps": 15,
    "seed": 42,
}
LORA = {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"}
ASHA = {"type": "asha", "grace_period": 1, "reduction_factor": 4}
HALVING = {"type": "halving", "grace_period": 1, "reduction_factor": 4}
SCHEDULED = {  # name -> (eval_steps, scheduler, max_steps as the scheduler's resource): rungs at evals, grace one eval
    "asha": (15, ASHA, False),
    "asha_fine": (5, ASHA, False),
    # The usual set-up: steps are the resource, not an axis (every trial may run to 60).
    "asha_steps_as_resource": (15, ASHA, True),
    "halving": (15, HALVING, False),
    "halving_steps_as_resource": (15, HALVING, True),
}
KTO_AXES = {"loss_type": ["kto"], "beta": [0.1, 0.5], "learning_rate": [5.0e-4], "max_steps": [60]}
KTO_COMPARED = ("loss", "rewards/margins", "kl", "eval_loss", "eval_kl", "eval_rewards/accuracies")
MAX_EVAL_ROWS = 200
COMPARED = ("loss", "rewards/margins", "rewards/accuracies")
TOLERANCE = 1e-4


def spec(name: str, train: dict | None = None, axes: dict | None = None, **extra) -> dict:
    return {
        "name": name,
        "model": "builtin:tiny",
        "dataset": {"path": "builtin:prefs", "max_eval_rows": MAX_EVAL_ROWS},
        "axes": axes or AXES,
        "train": {**TRAIN, **(train or {})},
        "lora": LORA,
        "resources": {"cpu": 1},
        "samples": {"prompts": 0},
        "save": "none",
        **extra,
    }


def points() -> list[dict]:
    return [dict(zip(AXES, values)) for values in itertools.product(*AXES.values())]


def key(point: dict) -> str:
    return json.dumps({k: point[k] for k in AXES}, sort_keys=True)


def run_naive(work: Path, model: str) -> tuple[float, dict]:
    from sweep.builtin import BUILTIN_DATASETS
    from sweep.trial.configs import LORA_DEFAULTS, TRAIN_DEFAULTS

    def one(i_point):
        i, point = i_point
        out = work / f"naive-{i}.json"
        train = {
            **TRAIN_DEFAULTS,
            **TRAIN,
            **point,
            "activation_checkpointing": False,
            "use_cpu": True,
            "bf16": False,
            "fp16": False,
            "report_to": [],
            "output_dir": str(work / f"naive-{i}"),
        }
        config = {"train": train, "lora": {**LORA_DEFAULTS, **LORA}, "max_eval_rows": MAX_EVAL_ROWS}
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        subprocess.run(
            [
                sys.executable,
                str(REPO / "benchmarks" / "naive_dpo.py"),
                "--model",
                model,
                "--data",
                str(BUILTIN_DATASETS["prefs"]),
                "--config",
                json.dumps(config),
                "--out",
                str(out),
            ],
            check=True,
            env=env,
            capture_output=True,
        )
        return key(point), json.loads(out.read_text())

    t0 = time.time()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = dict(pool.map(one, enumerate(points())))
    return time.time() - t0, results


def run_spec(folder: Path, spec_dict: dict) -> tuple[float, float, object, list]:
    """`python -m sweep run` on `spec_dict` in `folder` (its own store): (start, wall seconds,
    the MLflow client, the trial runs)."""
    from mlflow.tracking import MlflowClient

    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec_dict, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "sweep", "run", "spec.yaml"], cwd=folder, env=env, capture_output=True, text=True
    )
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed:\n{proc.stdout}\n{proc.stderr}")
    c = MlflowClient(f"sqlite:///{folder / 'results' / 'mlflow.db'}")
    exp = c.get_experiment_by_name(spec_dict["name"])
    return (
        t0,
        wall,
        c,
        c.search_runs([exp.experiment_id], filter_string="tags.`sweep.kind` = 'trial'", max_results=1000),
    )


def run_sweep(work: Path, name: str, **extra) -> tuple[float, dict]:
    t0, wall, _, runs = run_spec(work / name, spec(name, **extra))
    results = {}
    for r in runs:
        point = {
            k.removeprefix("sweep."): yaml.safe_load(v) for k, v in r.data.params.items() if k.startswith("sweep.")
        }
        point.setdefault("max_steps", int(r.data.params["trial.max_steps"]))  # not an axis: the scheduler's resource
        results[key(point)] = {
            **r.data.metrics,
            "status": r.info.status,
            "stopped_early": "sweep.stopped_early" in r.data.tags,
        }
    return wall, {"t0": t0, "trials": results}


def kto_result(kto: dict) -> dict:
    """KTO's reference inline at every step vs shared: per-step time and the same metrics."""
    inline, shared = kto[False][1]["trials"], kto[True][1]["trials"]

    def median_step(trials: dict) -> float:
        return round(statistics.median(t["time/step_s"] for t in trials.values()), 4)

    return {
        "grid": KTO_AXES,
        "wall_s": {"inline": round(kto[False][0], 1), "shared": round(kto[True][0], 1)},
        "train_runtime_s_summed": {
            "inline": round(sum(t["train_runtime"] for t in inline.values()), 1),
            "shared": round(sum(t["train_runtime"] for t in shared.values()), 1),
        },
        "step_s_median": {"inline": median_step(inline), "shared": median_step(shared)},
        "step_speedup": round(median_step(inline) / median_step(shared), 2),
        "reference_s": round(sum(t.get("time/reference_pass_s", 0.0) for t in shared.values()), 2),
        "max_abs_diff": {m: max(abs(inline[k][m] - shared[k][m]) for k in inline) for m in KTO_COMPARED},
    }


def compare(naive_wall: float, naive: dict, sweep_wall: float, swept: dict) -> dict:
    """One naive run against one sweep run: speed-up, efficiency, phases, same metrics."""
    worst = {m: max(abs(naive[k][m] - swept["trials"][k][m]) for k in naive) for m in COMPARED}
    trials = swept["trials"].values()
    sum_train_sweep = sum(t["train_runtime"] for t in trials)
    reference = sum(
        t.get("time/reference_pass_s", 0.0) for t in trials
    )  # the pass, whichever trials computed its parts
    first_step = min(t["time/train_start_unix"] for t in trials) - swept["t0"]
    sum_setup = sum(t["time/setup_s"] for t in trials)
    phases_naive = {p: sum(r["phases"][p] for r in naive.values()) for p in next(iter(naive.values()))["phases"]}
    sum_train_naive = phases_naive["training (with inline reference)"]
    per_process = {
        p: statistics.median(r["phases"][p] for r in naive.values()) for p in ("start-up", "model load", "tokenize")
    }
    one_time = sum(per_process.values()) + reference
    lower_bound = one_time + sum_train_sweep / CONCURRENCY
    return {
        "naive_wall_s": round(naive_wall, 1),
        "sweep_wall_s": round(sweep_wall, 1),
        "speedup": round(naive_wall / sweep_wall, 2),
        "efficiency": round(lower_bound / sweep_wall, 2),
        "lower_bound_s": round(lower_bound, 1),
        "lower_bound_parts_s": {
            **{f"one process: {p}": round(v, 2) for p, v in per_process.items()},
            "one reference pass over the rows read": round(reference, 2),
            "policy-only training / concurrency": round(sum_train_sweep / CONCURRENCY, 1),
        },
        "efficiency_excluding_start_up": round((lower_bound - per_process["start-up"]) / sweep_wall, 2),
        "max_abs_diff": worst,
        "metrics_agree": all(v <= TOLERANCE for v in worst.values()),
        "sweep_phases_s": {
            "start-up (command to first training step)": round(first_step, 1),
            "reference pass (once, over the rows read)": round(reference, 2),
            "per-trial set-up, summed (model reuse, data, trainer)": round(sum_setup, 1),
            "training, policy only, summed": round(sum_train_sweep, 1),
            "orchestration (wall - start-up - (set-up + training) / concurrency)": round(
                sweep_wall - first_step - (sum_setup + sum_train_sweep) / CONCURRENCY, 1
            ),
        },
        "naive_phases_s_summed": {
            **{k: round(v, 1) for k, v in phases_naive.items()},
            "of which reference (naive training - sweep training)": round(sum_train_naive - sum_train_sweep, 1),
        },
    }


def main() -> None:
    import argparse

    from sweep.builtin import builtin_model_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="naive and sweep runs, alternated (this machine's speed drifts more than the gains)",
    )
    repeats = parser.parse_args().repeats
    model = str(builtin_model_path("tiny"))  # built once, outside every timing
    work = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    print(f"{len(points())}-point grid {AXES}, {CONCURRENCY} at a time, {repeats} repeats; work dir {work}", flush=True)

    runs = []  # (naive wall, naive results, sweep wall, sweep results), alternated so drift hits both
    for r in range(repeats):
        (work / f"rep{r}").mkdir()
        naive_wall, naive = run_naive(work / f"rep{r}", model)
        print(f"naive: {naive_wall:.1f}s", flush=True)
        sweep_wall, swept = run_sweep(work / f"rep{r}", "bench")
        print(f"sweep: {sweep_wall:.1f}s", flush=True)
        runs.append((naive_wall, naive, sweep_wall, swept))
    ashas = {}
    for name, (eval_steps, scheduler, steps_as_resource) in SCHEDULED.items():
        train, axes = {"eval_steps": eval_steps}, None
        if steps_as_resource:
            train["max_steps"] = max(AXES["max_steps"])
            axes = {k: v for k, v in AXES.items() if k != "max_steps"}
        ashas[name] = run_sweep(work, name, train=train, axes=axes, scheduler=scheduler)
        print(f"{name}: {ashas[name][0]:.1f}s", flush=True)
    kto = {
        shared: run_sweep(work, f"kto_{'shared' if shared else 'inline'}", axes=KTO_AXES, share_reference=shared)
        for shared in (False, True)
    }

    compared = [compare(*run) for run in runs]
    swept = runs[0][3]
    # Early stopping: steps trained, and whether it found the full grid's best configuration.
    metric = "eval_rewards/accuracies"
    full_steps = sum(t["global_step"] for t in swept["trials"].values())
    best_full = max(swept["trials"], key=lambda k: swept["trials"][k][metric])

    def scheduled_result(name: str) -> dict:
        wall, run = ashas[name]
        steps = sum(t.get("global_step", 0) for t in run["trials"].values())
        finished = {k: t for k, t in run["trials"].items() if t["status"] == "FINISHED"}
        best = max(finished, key=lambda k: finished[k][metric])
        eval_steps, scheduler, steps_as_resource = SCHEDULED[name]
        return {
            "eval_steps": eval_steps,
            "scheduler": scheduler,
            "max_steps_as_resource": steps_as_resource,
            "wall_s": round(wall, 1),
            "training_steps": steps,
            "full_grid_steps": full_steps,
            "steps_fraction": round(steps / full_steps, 3),
            "stopped_early": sum(t["stopped_early"] for t in run["trials"].values()),
            "best": json.loads(best),
            "best_metric": finished[best][metric],
            "regret": round(swept["trials"][best_full][metric] - finished[best][metric], 4),
            "found_full_grid_best": best == best_full,
        }

    def median(key: str, phase: str | None = None) -> float:
        return statistics.median(c[key][phase] if phase else c[key] for c in compared)

    start_up = "start-up (command to first training step)"
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "grid": AXES,
        "points": len(points()),
        "concurrency": CONCURRENCY,
        "repeats": repeats,
        "median": {
            "naive_wall_s": median("naive_wall_s"),
            "sweep_wall_s": median("sweep_wall_s"),
            "speedup": median("speedup"),
            "efficiency": median("efficiency"),
            "start_up_s": median("sweep_phases_s", start_up),
        },
        "each": [
            {k: c[k] for k in ("naive_wall_s", "sweep_wall_s", "speedup", "efficiency")}
            | {"start_up_s": c["sweep_phases_s"][start_up]}
            for c in compared
        ],
        "metrics_agree": all(c["metrics_agree"] for c in compared),
        # The repeat with the median speed-up, in detail.
        "detail": sorted(compared, key=lambda c: c["speedup"])[len(compared) // 2],
        "full_grid_best": json.loads(best_full),
        "full_grid_best_metric": swept["trials"][best_full][metric],
        **{name: scheduled_result(name) for name in SCHEDULED},
        "kto": kto_result(kto),
    }
    print(json.dumps(result, indent=2))
    (REPO / "benchmarks" / "sweep_speedup.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
