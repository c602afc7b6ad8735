"""Every yardstick on the embedded default, as this machine runs it. Run by hand, not in CI:

    python benchmarks/yardsticks.py     # ~5 min on 2 cores; writes benchmarks/yardsticks.json

1. Builds `builtin:tiny` and `builtin:judge` in an empty cache (the one-off cost a fresh clone
   pays before its first judged sweep), timed each.
2. Asks `builtin:judge` about the held-out pairs (the right answer against the rejected one,
   both orders): how often it prefers the right one, by what was wrong with the other.
3. Runs `python -m sweep run search_spaces/yardsticks.yaml` in a fresh folder (the LLM judge,
   one harness task, `scheduler: paired`), timed, and keeps its summary.csv's yardsticks and the
   report's JSON (the base model, the Pareto front).

`benchmarks/render.py` renders docs/benchmarks.md's section from the JSON.
"""

from __future__ import annotations

import collections
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "search_spaces" / "yardsticks.yaml"
OUT = REPO / "benchmarks" / "yardsticks.json"
KEPT = [
    "status",
    "loss_type",
    "beta",
    "eval_judge/score",
    "eval_judge/llm_judge",
    "eval_judge/llm_judge_lc",
    "eval_judge/llm_judge_unparsed",
    "eval_judge/length",
    "harness/prefs_choice/acc",
    "harness/worst_vs_base",
    "steps",
]


def _value(text: str):
    """A summary.csv cell: a number where it is one, None where empty."""
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def judge_agreement(pairs: int = 200) -> dict:
    """builtin:judge's outcomes for the right answer against the rejected one, by its flaw."""
    from sweep.builtin import BUILTIN_DATASETS
    from sweep.trial.judge import judge_answers
    from sweep.trial.scorers import parse_scorer

    rows = [json.loads(line) for line in open(BUILTIN_DATASETS["prefs"] / "test.jsonl")][:pairs]
    said = judge_answers(
        parse_scorer("judge", "llm:builtin:judge"),
        [r["prompt"] for r in rows],
        [r["chosen"][-1]["content"] for r in rows],
        [r["rejected"][-1]["content"] for r in rows],
        "cpu",
        batch_size=50,
    )
    by_flaw: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row, score in zip(rows, said.scores, strict=True):
        by_flaw[row["flaw"]][
            {1.0: "right preferred", 0.5: "tie", 0.0: "other preferred", None: "unparseable"}[score]
        ] += 1
    return {flaw: dict(counts) for flaw, counts in sorted(by_flaw.items())}


def main() -> None:
    sys.path.insert(0, str(REPO))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory(prefix="yardsticks-") as work:
        os.environ["SWEEP_CACHE"] = env["SWEEP_CACHE"] = str(Path(work) / "cache")
        from sweep.builtin import builtin_model_path

        build = {}
        for name in ("tiny", "judge"):
            start = time.monotonic()
            builtin_model_path(name, log=lambda *_: None)
            build[name] = round(time.monotonic() - start, 1)
        agreement = judge_agreement()
        start = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "sweep", "run", str(SPEC)],
            cwd=work, env=env, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        wall = round(time.monotonic() - start, 1)
        if run.returncode != 0:
            sys.exit(f"the yardsticks sweep exited {run.returncode}: {run.stderr[-2000:]}")
        with open(Path(work) / "results" / "yardsticks" / "summary.csv") as f:
            summary = [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(f)]
        report = json.loads(
            subprocess.run(
                [sys.executable, "-m", "sweep", "report", "yardsticks", "--format", "json"],
                cwd=work, env=env, capture_output=True, text=True, timeout=600, check=True,
            ).stdout
        )  # fmt: skip
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "command": "python -m sweep run search_spaces/yardsticks.yaml",
        "build_s": build,
        "sweep_wall_s": wall,
        "judge_agreement": agreement,
        "trials": [{k: t.get(k) for k in KEPT} for t in summary],
        "base_model": report["base_model"],
        "pareto_front": report["pareto_front"],
    }
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
