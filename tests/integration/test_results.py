"""Results you can trust: repeats over seeds with confidence intervals, determinism, metrics
recomputed from saved adapters, the best model merged out, and generations side by side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest

from sweep import api as sweep_api
from sweep.record import dataset_inputs, logged_models
from sweep.trial.evaluation import generate_samples
from tests.conftest import chromium, cli_in_process, mlflow_store, run_cli, small_spec, sweep_ui, ui_page, write_spec


@pytest.fixture(scope="session")
def seeded(tmp_path_factory, tiny_model_path):
    """A real seeded sweep: 2 betas x 3 seeds, each trial logging 3 generations and judging 6
    held-out answers at each of its 2 evaluations."""
    cwd = tmp_path_factory.mktemp("seeded")
    # Ranked by margin: after 8 steps both betas move every pair the same way, so sign-based
    # accuracy ties them; margins scale with beta and separate them.
    spec = small_spec(
        "seeded",
        axes={"beta": [0.01, 0.5]},
        seeds=[0, 1, 2],
        samples={"prompts": 3, "max_new_tokens": 16},
        judge={"prompts": 6, "scorers": ["builtin:verifiable"], "max_new_tokens": 8, "batch_size": 6},
        save="all",
        train={"max_steps": 8, "eval_steps": 4},
        metric="eval_rewards/margins",
        max_concurrent_trials=1,
    )
    proc = run_cli("run", str(write_spec(cwd / "seeded.yaml", spec)), cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return cwd, proc


@pytest.fixture(scope="session")
def seeded_report(seeded):
    proc = cli_in_process("report", "seeded", "--format", "json", cwd=seeded[0])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_seeds_repeat_every_point_and_the_report_gives_intervals_and_a_verdict(seeded, seeded_report):
    cwd, proc = seeded
    report = seeded_report
    _, _, children = mlflow_store(cwd, "seeded")
    assert sorted((float(r.data.params["sweep.beta"]), int(r.data.params["sweep.seed"])) for r in children) == [
        (b, s) for b in (0.01, 0.5) for s in (0, 1, 2)
    ]
    repeats = {r["point"]: r for r in report["repeats"]}
    assert set(repeats) == {"beta=0.01", "beta=0.5"} and all(r["n"] == 3 for r in repeats.values())
    for point, r in repeats.items():
        values = [t[report["ranked_by"]] for t in report["trials"] if f"beta={t['beta']:g}" == point]
        assert r["mean"] == pytest.approx(sum(values) / 3)
        assert r["ci95_low"] <= min(r["mean"], min(values) + 1e-9) and r["ci95_high"] >= r["mean"]
    best = report["repeats"][0]
    assert best["mean"] >= report["repeats"][1]["mean"]
    verdict = report["separability"]
    assert verdict.startswith(f"best {best['point']} (") and "paired t-test over 3 seeds p=" in verdict
    assert ("NOT separable" in verdict) != verdict.split(": ", 1)[1].startswith("separable")
    assert "over seeds: mean, std, 95% confidence interval" in proc.stdout and verdict in proc.stdout


# A rerun's metrics may differ from the sweep's in their last bits where the BLAS kernels
# depend on memory layout (a warm worker's allocations are not a fresh one's); docs/spec.md.
REPRODUCED_RTOL, REPRODUCED_ATOL = 1e-4, 1e-7


def test_a_point_rerun_in_a_fresh_process_gives_the_same_metrics(seeded, tmp_path):
    """One point of the seeded sweep, run again by `sweep run` in a folder of its own (its own
    Ray, its own caches, a fresh worker instead of a warm one): the same metrics on CPU to
    REPRODUCED_RTOL, the tolerance docs/spec.md states. The seed still matters (LoRA's initial
    weights, data order): another seed moves the margins by far more than that."""
    import pandas as pd

    cwd, _ = seeded
    spec = cwd / "seeded.yaml"
    proc = run_cli("run", str(spec), "--set", "axes.beta=[0.5]", "--set", "seeds=[1]", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    sweep, again = (pd.read_csv(d / "results" / "seeded" / "summary.csv") for d in (cwd, tmp_path))
    timing = ("runtime", "_per_second", "time/", "run_id", "_start", "_end")
    metrics = [c for c in again.columns if not any(t in c for t in timing)]
    assert {"loss", "eval_loss", "eval_rewards/margins", "seed"} <= set(metrics) and len(again) == 1
    same_point = sweep[(sweep["beta"] == 0.5) & (sweep["seed"] == 1)].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        same_point[metrics], again[metrics], check_exact=False, rtol=REPRODUCED_RTOL, atol=REPRODUCED_ATOL
    )
    margins = sweep[sweep["beta"] == 0.5].set_index("seed")["eval_rewards/margins"]
    assert abs(margins[0] - margins[1]) > 100 * (REPRODUCED_RTOL * abs(margins[1]) + REPRODUCED_ATOL)


def test_evaluate_recomputes_logged_metrics_and_names_a_trial_whose_adapter_changed(seeded, seeded_report):
    from safetensors.torch import load_file, save_file

    cwd, _ = seeded
    proc = run_cli("evaluate", "seeded", "--format", "json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 6
    for row in rows:
        assert abs(row["eval_rewards/accuracies (recomputed)"] - row["eval_rewards/accuracies (logged)"]) <= 1e-3
        assert abs(row["eval_rewards/margins (recomputed)"] - row["eval_rewards/margins (logged)"]) <= 1e-3
    _, _, children = mlflow_store(cwd, "seeded")
    assert all("verified_eval_rewards/accuracies" in r.data.metrics for r in children)

    # The best trial's stored adapter altered after it was logged: evaluate must see it, not echo the log.
    best = next(r for r in children if r.info.run_name == seeded_report["trials"][0]["trial"])
    stored = logged_models.adapter_of(mlflow_store(cwd, "seeded")[0], best)  # a logged model of the run
    weights = Path(urlparse(stored.artifact_location).path) / "adapter_model.safetensors"
    original = weights.read_bytes()
    try:
        save_file({k: v * 10 if "lora_B" in k else v for k, v in load_file(weights).items()}, weights)
        proc = run_cli("evaluate", "seeded", "--trial", best.info.run_name, "--format", "json", cwd=cwd)
    finally:
        weights.write_bytes(original)
    assert proc.returncode == 1, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["trial"] == best.info.run_name and row["|diff| margins"] > 1e-3
    assert "largest difference from the logged values" in proc.stderr


def test_promote_merges_the_best_adapter_into_a_loadable_model(seeded, seeded_report):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sweep.trial.finished import load_trial
    from sweep.trial.model import resolve_model_path

    cwd, _ = seeded
    out = cwd / "promoted"
    proc = run_cli("promote", "seeded", "--out", str(out), "--register", "seeded-best", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    provenance = json.loads((out / "sweep_promoted.json").read_text())
    assert provenance["sweep"] == "seeded" and provenance["trial"] == seeded_report["trials"][0]["trial"]  # the best

    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path("builtin:tiny", log=lambda *_: None))
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Reverse the word: lamp"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    c, _, children = mlflow_store(cwd, "seeded")
    run = next(r for r in children if r.info.run_name == provenance["trial"])
    adapted = load_trial(f"sqlite:///{cwd / 'results' / 'mlflow.db'}", run, quantized=False).model  # base + LoRA
    with torch.no_grad():
        logits = merged(**ids).logits
        assert torch.allclose(logits, adapted(**ids).logits, atol=1e-5)  # merging changed nothing the adapter does
        assert not torch.allclose(logits, base(**ids).logits, atol=1e-4)  # and the adapter does something
    assert run.info.status == "FINISHED" and run.data.tags["sweep.promoted_to"] == str(out.resolve())

    # In MLflow: the merged model is a logged model of the trial's run, with the metric it was ranked
    # by, registered under alias `best`; MLflow's own loader, in a process that never imports sweep,
    # gets a model that answers as the best trial's adapter on its base does.
    models = sweep_api.models("seeded", results_dir=cwd / "results")
    (merged_row,) = models[models["model_type"] == "merged model"].to_dict("records")
    assert merged_row["trial"] == provenance["trial"] and merged_row["registered"] == "seeded-best@best v1"
    assert merged_row["eval_rewards/margins"] == pytest.approx(run.data.metrics["eval_rewards/margins"])
    assert sorted(models[models["model_type"] == "LoRA adapter"]["trial"]) == sorted(r.info.run_name for r in children)
    prompt = [{"role": "user", "content": "Reverse the word: lamp"}]
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_REGISTERED, json.dumps(prompt)],
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'results' / 'mlflow.db'}"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    model, tokenizer = sweep_api.best("seeded", results_dir=cwd / "results").load()
    expected = generate_samples(model, tokenizer, [prompt], max_new_tokens=16)["answer"][0]
    assert json.loads(loaded.stdout.splitlines()[-1]) == expected and expected


# MLflow's transformers flavor loads the registered model by alias; greedy answer as JSON.
LOAD_REGISTERED = """
import json, sys
import mlflow
parts = mlflow.transformers.load_model("models:/seeded-best@best", return_type="components")
model, tokenizer = parts["model"], parts["tokenizer"]
ids = tokenizer.apply_chat_template(json.loads(sys.argv[1]), add_generation_prompt=True, return_tensors="pt", return_dict=True)
out = model.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
assert "sweep" not in sys.modules
print(json.dumps(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()))
"""


def test_each_kept_adapter_is_an_mlflow_logged_model_with_the_metrics_it_was_ranked_by(seeded, seeded_report):
    """The Models tab of the experiment: one logged model per trial's adapter, its swept values
    as params, its final held-out metrics linked (on the evaluation split) without adding a point
    to the run's history; `sweep.models` lists them in the ranking's order."""
    cwd, _ = seeded
    c, parents, children = mlflow_store(cwd, "seeded")
    models = sweep_api.models("seeded", results_dir=cwd / "results")
    adapters = models[models["model_type"] == "LoRA adapter"]
    assert list(adapters["trial"]) == [t["trial"] for t in seeded_report["trials"]]
    evaluation = dataset_inputs.evaluation_split(parents[0])
    assert evaluation is not None
    for run in children:
        model = logged_models.adapter_of(c, run)
        assert model.params == {k: v for k, v in run.data.params.items() if k.startswith("sweep.")}
        linked = {m.key: m for m in model.metrics}
        margins = linked["eval_rewards/margins"]
        assert margins.value == pytest.approx(run.data.metrics["eval_rewards/margins"])
        assert (margins.dataset_name, margins.dataset_digest) == evaluation
        assert [m.step for m in c.get_metric_history(run.info.run_id, "eval_rewards/margins")] == [4, 8]


def test_the_mlflow_ui_shows_judged_answers_side_by_side_and_the_kept_adapters(seeded, seeded_report):
    """The other two URLs `sweep ui` prints, each opened with no click: the trials' latest judged
    answers side by side, prompt by prompt (MLflow's evaluation view); the Models tab, listing
    each trial's adapter with its source run."""
    from playwright.sync_api import sync_playwright

    cwd, _ = seeded
    c, _, children = mlflow_store(cwd, "seeded")
    best, second = (next(r for r in children if r.info.run_name == t["trial"]) for t in seeded_report["trials"][:2])
    answers = {
        run.info.run_name: pd.DataFrame(
            **json.load(open(c.download_artifacts(run.info.run_id, "judge/step-000008.json", str(cwd / "got"))))
        )
        for run in (best, second)
    }
    with sweep_ui(cwd, "seeded") as (_, urls), sync_playwright() as p:
        browser = chromium(p)
        page = ui_page(browser, height=3000)  # every prompt's row drawn
        page.goto(urls["judged answers side by side"])
        page.get_by_text("judge/step-000008.json").wait_for(timeout=60_000)  # the latest evaluation's
        for prompt in answers[best.info.run_name]["prompt"]:
            page.get_by_text(prompt, exact=True).first.wait_for(timeout=30_000)
        text = " ".join(page.inner_text("body").split())
        page.goto(urls["models"])
        for run in children:  # each model's row, and its source run's name (shown once the runs are fetched)
            page.get_by_text(f"adapter-{run.data.tags['sweep.trial_id']}", exact=True).wait_for(timeout=60_000)
            page.get_by_text(run.info.run_name, exact=True).first.wait_for(timeout=60_000)
        models = page.inner_text("body")
        browser.close()
    assert "Group by: prompt" in text and "Compare: answer" in text  # each trial's answer, prompt by prompt
    for name, table in answers.items():  # two trials' columns, each with its answers
        assert name in text and all(" ".join(a.split()) in text for a in table["answer"] if a)
    for run in children:
        assert f"adapter-{run.data.tags['sweep.trial_id']}" in models and run.info.run_name in models


def test_generations_are_logged_and_shown_beside_the_base_model(seeded, seeded_report):
    cwd, _ = seeded
    c, _, children = mlflow_store(cwd, "seeded")
    table = json.loads(open(c.download_artifacts(children[0].info.run_id, "samples.json", str(cwd))).read())
    assert table["columns"] == ["prompt", "base", "answer"] and len(table["data"]) == 3
    proc = cli_in_process("report", "seeded", "--samples", "--top", "2", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.split("samples: the base model and the top trials")[1]
    top = [t["trial"] for t in seeded_report["trials"][:2]]
    assert out.count("prompt: ") == 3 and out.count("  base ") == 3
    assert all(out.count(f"  {name} ") == 3 for name in top)
    assert table["data"][0][0] in out
