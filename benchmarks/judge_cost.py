"""What judging generations costs a sweep. Run by hand, not in CI:

    python benchmarks/judge_cost.py [--repeats 2]     # ~3 min on 2 cores; writes benchmarks/judge_cost.json

Runs the default sweep (`search_spaces/beta_grid.yaml`: 8 trials, 3 evaluations each, 100
judged prompts) as shipped and with the judge off (`judge.prompts: 0`, ranked by
`eval_rewards/accuracies`), alternated `--repeats` times in this one run (the machine is
shared and noisy). Prints and saves, per pair: the wall time of `python -m sweep run` with and
without the judge, and from the trials' own timers (`time/judge_s`, logged cumulatively by
each trial) the seconds per judged evaluation (the median trial's), the base model's answers
(computed once per sweep by the first trial to judge), and the judge's share of the trials'
summed training time. The
training metrics of the two runs agree exactly: judging changes no training step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import yaml
from sweep_speedup import REPO, run_spec  # this folder is on sys.path when the script runs

COMPARED = ("loss", "rewards/margins", "eval_rewards/accuracies")


def run(folder: Path, judged: bool) -> dict:
    spec = yaml.safe_load((REPO / "search_spaces" / "beta_grid.yaml").read_text())
    if not judged:
        spec.update(judge={"prompts": 0}, metric="eval_rewards/accuracies")
    _, wall, c, runs = run_spec(folder, spec)
    trials = {r.info.run_name: r.data.metrics for r in runs}
    out = {"wall_s": wall, "trials": trials}
    if judged:
        evals = {r.info.run_name: len(c.get_metric_history(r.info.run_id, "eval_judge/score")) for r in runs}
        judge_s = {name: m["time/judge_s"] for name, m in trials.items()}
        # The median trial's: the first trials to judge also generated the base model's answers
        # (or waited for the trial that did).
        per_eval = statistics.median(judge_s[n] / evals[n] for n in judge_s)
        out.update(
            evaluations=sum(evals.values()),
            judge_s_summed=sum(judge_s.values()),
            per_evaluation_s=per_eval,
            base_answers_s=max(judge_s[n] - evals[n] * per_eval for n in judge_s),
            trial_s_summed=sum(m["train_runtime"] for m in trials.values()),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            off = run(Path(tmp) / f"off-{i}", judged=False)
            on = run(Path(tmp) / f"on-{i}", judged=True)
            same = all(on["trials"][t][k] == off["trials"][t][k] for t in on["trials"] for k in COMPARED)
            pair = {
                "wall_off_s": off["wall_s"],
                "wall_on_s": on["wall_s"],
                "added_wall_s": on["wall_s"] - off["wall_s"],
                "evaluations": on["evaluations"],
                "per_evaluation_s": on["per_evaluation_s"],
                "base_answers_s": on["base_answers_s"],
                "judge_s_summed": on["judge_s_summed"],
                "judge_share_of_trial_time": on["judge_s_summed"] / on["trial_s_summed"],
                "training_metrics_identical": same,
            }
            pairs.append(pair)
            print(json.dumps(pair), flush=True)
    result = {
        "repeats": pairs,
        "median_added_wall_s": statistics.median(p["added_wall_s"] for p in pairs),
        "median_per_evaluation_s": statistics.median(p["per_evaluation_s"] for p in pairs),
    }
    (REPO / "benchmarks" / "judge_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "repeats"}))


if __name__ == "__main__":
    main()
