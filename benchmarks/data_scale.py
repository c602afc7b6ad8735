"""Does a short sweep's cost follow its steps, not its dataset? Run by hand, not in CI:

    python benchmarks/data_scale.py                  # ~10 min on 2 cores; writes benchmarks/data_scale.json
    python benchmarks/data_scale.py --render         # docs/benchmarks.md's table again from the JSON (benchmarks/render.py)

The same 2-trial sweep (beta 0.1 and 0.5, 5 steps of batch 8: 40 train pairs per trial) on
local .jsonl files of 2k, 20k and 200k pairs of the builtin layout (the builtin rows repeated,
each prompt made unique), a tenth held out and cut to 200 pairs so that the eval split is the
same size in each. Each size runs with this checkout ("after") and with `--before` (default:
the last commit that tokenised every train row), side by side: before, after, per size.

For each run: the driver's wall time, its peak memory (VmHWM of the `sweep run` process),
and per trial (mean of the two) `time/setup_s` (trial start to first step: loading, tokenising,
reference) and the reference time (`time/reference_computed_s` or `_loaded_s`). Target on 2
cores: the 200k-pair sweep within 1.3x of the 2k-pair sweep's wall time, after; the 2k case
no slower than before. Reading and formatting a file the first time (datasets caches it for
later sweeps) is timed apart, as "first read", and not in either sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = Path(__file__).with_suffix(".json")
BEFORE = "e43e17b"  # the last commit whose trials tokenised every train row
SIZES = (2_000, 20_000, 200_000)
TARGET = 1.3  # 200k-pair wall / 2k-pair wall, after


def build_data(folder: Path, rows: int) -> Path:
    """`rows` pairs of the builtin layout in one .jsonl file, each prompt unique."""
    file = folder / f"pairs-{rows}.jsonl"
    if not file.exists():
        source = [json.loads(line) for line in (REPO / "sweep/assets/prefs/train.jsonl").open()]
        with file.open("w") as f:
            for i in range(rows):
                row = dict(source[i % len(source)])
                row["prompt"] = [{"role": "user", "content": f"{row['prompt'][0]['content']} (#{i})"}]
                f.write(json.dumps(row) + "\n")
    return file


def write_spec(folder: Path, data: Path, results: Path) -> Path:
    import yaml

    spec = {
        "name": "data_scale",
        "model": "builtin:tiny",
        "dataset": {"path": str(data), "max_eval_rows": 200},
        "axes": {"beta": [0.1, 0.5]},
        "train": {"max_steps": 5, "per_device_train_batch_size": 8},
        "results_dir": str(results),
    }
    path = folder / f"{data.stem}-{results.name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def peak_rss_mb(pid: int, done: threading.Event, out: list) -> None:
    """The process's VmHWM (its own peak resident memory), read until it exits."""
    while not done.is_set():
        try:
            text = Path(f"/proc/{pid}/status").read_text()
            out[:] = [int(re.search(r"VmHWM:\s+(\d+) kB", text)[1]) / 1024]
        except (OSError, TypeError):
            pass
        time.sleep(0.2)


def first_load(data: Path, cache: Path) -> float:
    """Seconds to read and format `data` the first time, into the datasets cache `cache` that
    the sweeps of this size then read it from (as a user's second sweep on a file does)."""
    code = (
        "import sys\nfrom sweep.data import load_preference_data\nfrom sweep.spec.schema import DatasetSpec\n"
        "load_preference_data(DatasetSpec(path=sys.argv[1], max_eval_rows=200))"
    )
    t0 = time.time()
    subprocess.run([sys.executable, "-c", code, str(data)], cwd=REPO, env=_env(REPO, cache), check=True)
    return round(time.time() - t0, 2)


def _env(checkout: Path, cache: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(checkout), "HF_DATASETS_CACHE": str(cache)}


def run_sweep(checkout: Path, spec: Path, cache: Path) -> dict:
    """`python -m sweep run spec` in `checkout`: wall, driver peak memory, trial timings."""
    env = _env(checkout, cache)
    t0 = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep", "run", str(spec)],
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    done, peak = threading.Event(), []
    watcher = threading.Thread(target=peak_rss_mb, args=(proc.pid, done, peak))
    watcher.start()
    out, _ = proc.communicate()
    wall = time.time() - t0
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"sweep run failed in {checkout}:\n{out[-3000:]}")
    trials = trial_timings(spec)
    return {"wall_s": round(wall, 2), "driver_peak_mb": round(peak[0], 1) if peak else None, **trials}


def trial_timings(spec: Path) -> dict:
    """Mean `time/setup_s` and reference time of the sweep's trials, from its MLflow store."""
    import mlflow
    import yaml

    results = Path(yaml.safe_load(spec.read_text())["results_dir"])
    client = mlflow.tracking.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("data_scale")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if "time/setup_s" in r.data.metrics]

    def mean(keys) -> float:
        values = [next(r.data.metrics[k] for k in keys if k in r.data.metrics) for r in runs]
        return round(sum(values) / len(values), 2)

    return {
        "trials": len(runs),
        "setup_s": mean(["time/setup_s"]),
        "reference_s": mean(["time/reference_computed_s", "time/reference_loaded_s"]),
    }


def render(results: dict) -> str:
    """docs/benchmarks.md's data-scale table, from the JSON."""
    lines = [
        f"`python benchmarks/data_scale.py` ({results['date']}, {results['machine']}; before: `{results['before']}`):",
        "",
        "| train pairs | wall before | wall after | setup/trial before | setup/trial after "
        "| reference before | reference after | driver peak before | driver peak after | first read |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, r in results["sizes"].items():
        b, a = r["before"], r["after"]
        lines.append(
            f"| {int(size) * 9 // 10:,} | {b['wall_s']:.1f} s | {a['wall_s']:.1f} s | {b['setup_s']:.1f} s "
            f"| {a['setup_s']:.1f} s | {b['reference_s']:.1f} s | {a['reference_s']:.1f} s "
            f"| {b['driver_peak_mb']:.0f} MB | {a['driver_peak_mb']:.0f} MB | {r['first_load_s']:.1f} s |"
        )
    t = results["target"]
    lines += [
        "",
        f"After, the {max(SIZES) // 1000}k-pair sweep took {t['ratio']:.2f}x the {min(SIZES) // 1000}k-pair "
        f"sweep's wall time (target {TARGET}x: {'met' if t['met'] else 'missed'}); the "
        f"{min(SIZES) // 1000}k case took {t['small_after_over_before']:.2f}x its time before.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="the git revision to compare with")
    parser.add_argument("--render", action="store_true", help="only render docs/benchmarks.md from the JSON")
    args = parser.parse_args()
    if not args.render:
        with tempfile.TemporaryDirectory(prefix="data-scale-") as tmp:
            tmp = Path(tmp)
            before = tmp / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before], cwd=REPO, check=True)
            try:
                sizes = {}
                for size in SIZES:
                    data, cache = build_data(tmp, size), tmp / f"hf-datasets-{size}"
                    sizes[str(size)] = {"first_load_s": first_load(data, cache)}
                    for name, checkout in (("before", before), ("after", REPO)):
                        spec = write_spec(tmp, data, tmp / f"results-{name}-{size}")
                        sizes[str(size)][name] = run_sweep(checkout, spec, cache)
                    print(size, json.dumps(sizes[str(size)]), flush=True)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=REPO, check=False)
        small, large = sizes[str(min(SIZES))], sizes[str(max(SIZES))]
        ratio = large["after"]["wall_s"] / small["after"]["wall_s"]
        results = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{os.cpu_count()} cores, {platform.machine()}",
            "before": args.before,
            "sizes": sizes,
            "target": {
                "ratio": round(ratio, 3),
                "met": ratio <= TARGET,
                "small_after_over_before": round(small["after"]["wall_s"] / small["before"]["wall_s"], 3),
            },
        }
        OUT.write_text(json.dumps(results, indent=2) + "\n")
    # benchmarks/render.py renders every figure, this table among them (it imports this file's `render`)
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "render.py")], check=True)
    print(render(json.loads(OUT.read_text())))


if __name__ == "__main__":
    main()
