"""What Python's garbage collector costs a sweep's start-up. Run by hand, not in CI:

    python benchmarks/startup_gc.py            # ~2 min on 2 cores; writes benchmarks/startup_gc.json

Each of a sweep's processes starts by importing the stack, and on 2 cores the start-up is
bound by their CPU (sweep/runtime/startup.py). This runs, in fresh processes, alternated `--repeats`
times, with the collector on and paused as `sweep` pauses it:

- worker: a warm worker's imports (sweep/runtime/worker_preload.py's MODULES, bitsandbytes skipped as on CPU);
- driver: `run`'s start-up before Tune: Ray Tune, MLflow and a new sqlite store, the builtin
  data, the tokenizer and the length check.

It prints the CPU seconds (user + system) and wall seconds of each, and their medians.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

WORKER = """
import importlib
from sweep import warm
for name in warm.MODULES:
    importlib.import_module(name)
"""
DRIVER = """
import sys
import sweep.orchestrate
from sweep import tracking
from sweep.data import check_lengths, load_preference_data
from sweep.model import load_tokenizer, resolve_model_path
from sweep.spec import DatasetSpec
tracking.client(f"sqlite:///{sys.argv[1]}/mlflow.db").search_experiments()
data = load_preference_data(DatasetSpec(path="builtin:prefs"))
check_lengths(data, load_tokenizer(resolve_model_path("builtin:tiny")), 128, log=lambda *a: None)
"""
# Put before and after the code above: pause the collector as `sweep` does; print the
# process's (CPU seconds, wall seconds) so far.
PAUSE = "from sweep.runtime import startup\nstartup.pause()\n"
TIMES = "import os, sys, time\nt = os.times()\nprint(t.user + t.system, time.time() - float(sys.argv[2]))\n"


def measure(code: str, gc_mode: str) -> tuple[float, float]:
    import time

    env = {**os.environ, "PYTHONPATH": str(REPO), "SWEEP_SKIP_BITSANDBYTES": "1", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", (PAUSE if gc_mode == "paused" else "") + code + TIMES, tmp, str(time.time())],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    cpu, wall = map(float, out.stdout.split()[-2:])
    return round(cpu, 2), round(wall, 2)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    from sweep.builtin import builtin_model_path

    builtin_model_path("tiny")  # built once, outside every timing
    measure(WORKER, "on")  # one untimed run: files into the page cache
    runs: dict[str, dict[str, list]] = {p: {"on": [], "paused": []} for p in ("worker", "driver")}
    for _ in range(repeats):
        for process, code in (("worker", WORKER), ("driver", DRIVER)):
            for gc_mode in ("on", "paused"):  # alternated: this machine's speed drifts
                runs[process][gc_mode].append(measure(code, gc_mode))
    result = {"repeats": repeats, "runs (cpu_s, wall_s)": runs, "median": {}}
    for process, modes in runs.items():
        for gc_mode, values in modes.items():
            result["median"][f"{process}, collector {gc_mode}"] = {
                "cpu_s": statistics.median(v[0] for v in values),
                "wall_s": statistics.median(v[1] for v in values),
            }
    print(json.dumps(result["median"], indent=2))
    (REPO / "benchmarks" / "startup_gc.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
