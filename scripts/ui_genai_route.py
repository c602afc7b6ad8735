"""The other way to show judged answers in MLflow, tried: MLflow 3's GenAI evaluation (each answer
a trace, each score an assessment), for comparison with the evaluation view of logged tables that
`sweep ui` opens (docs/ui.md says which reads better and why). Not part of a sweep.

    python -m sweep run search_spaces/beta_grid.yaml
    python scripts/ui_genai_route.py beta_grid --out docs/

Logs the two best trials' latest judged table (`--prompts` rows) with `mlflow.genai.evaluate`
into two evaluation runs of the sweep's experiment (not children of its parent: the sweep's
tables never count them), prints how long that took, and screenshots MLflow's page comparing
the two (headless Debian chromium, no click) as `mlflow_ui_genai_compare.png`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def log_as_genai_evaluation(uri: str, name: str, prompts: int) -> tuple[str, list[str], float]:
    """(experiment id, the two evaluation runs, seconds taken)."""
    import mlflow
    from mlflow.entities import Feedback
    from mlflow.genai.scorers import scorer

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import sweep
    from sweep.record import tracking

    mlflow.set_tracking_uri(uri)
    c = tracking.client(uri)
    best_two = sweep.trials(name, tracking_uri=uri).head(2)
    experiment = c.get_experiment_by_name(name).experiment_id
    runs, start = [], time.monotonic()
    for run_id, trial in zip(best_two["run_id"], best_two["trial"]):
        tables = sorted(a.path for a in c.list_artifacts(run_id, "judge") if a.path.endswith(".json"))
        table = json.loads(Path(c.download_artifacts(run_id, tables[-1])).read_text())
        rows = [dict(zip(table["columns"], r)) for r in table["data"]][:prompts]
        by_prompt = {r["prompt"]: r for r in rows}

        @scorer(name="score")
        def score(inputs, outputs):
            return by_prompt[inputs["prompt"]]["score"]

        @scorer(name="vs_base")
        def vs_base(inputs, outputs):
            row = by_prompt[inputs["prompt"]]
            return Feedback(value=row["outcome"], rationale=f"the base model said: {row['base']}")

        data = [
            {"inputs": {"prompt": r["prompt"]}, "outputs": r["answer"], "expectations": {"base_answer": r["base"]}}
            for r in rows
        ]
        with mlflow.start_run(experiment_id=experiment, run_name=f"answers {trial}") as run:
            mlflow.genai.evaluate(data=data, scorers=[score, vs_base])
        runs.append(run.info.run_id)
    return experiment, runs, time.monotonic() - start


def main() -> int:
    from ui_screenshots import screenshot  # beside this script

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="sweep name")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--prompts", type=int, default=20)
    args = parser.parse_args()
    uri = f"sqlite:///{(Path(args.results_dir) / 'mlflow.db').resolve()}"
    experiment, runs, seconds = log_as_genai_evaluation(uri, args.name, args.prompts)
    print(f"{args.prompts} answers x 2 trials logged as traces with assessments in {seconds:.1f} s")
    ui = subprocess.Popen(
        [sys.executable, "-m", "sweep", "ui", args.name, "--results-dir", args.results_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        base = ui.stdout.readline().strip().split("/#/")[0]
        url = f"{base}/#/experiments/{experiment}/evaluation-runs/{runs[0]}/traces?compareToRunUuid={runs[1]}"
        screenshot(url, "Assessments", args.out / "mlflow_ui_genai_compare.png")
        print(url)
    finally:
        ui.terminate()
        ui.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
