"""The Python API as a notebook uses it on the default sweep, and `init` from a dataset through a
sweep."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pandas as pd
import yaml

from sweep.cli import main
from tests.conftest import REPO, chromium, cli_in_process, landing_rows, mlflow_store, sweep_ui, ui_page

LAYOUTS = {  # file name -> (rows, the layout `init` must report)
    "pairs.jsonl": (
        [{"prompt": f"What is {i}+1?", "chosen": str(i + 1), "rejected": str(i + 2)} for i in range(40)],
        "prompt/chosen/rejected",
    ),
    "orca.jsonl": (
        [
            {
                "system": "Answer briefly.",
                "question": f"What is {i}+1?",
                "chatgpt": str(i + 1),
                "llama2-13b-chat": f"It might be {i + 2}.",
            }
            for i in range(40)
        ],
        "Intel/orca_dpo_pairs",
    ),
    "stack.jsonl": (
        [
            {"qid": i, "question": f"What is {i}+1?", "response_j": str(i + 1), "response_k": str(i + 2)}
            for i in range(40)
        ],
        "stack-exchange-paired",
    ),
    "hh.jsonl": (
        [
            {
                "chosen": f"\n\nHuman: What is {i}+1?\n\nAssistant: {i + 1}",
                "rejected": f"\n\nHuman: What is {i}+1?\n\nAssistant: {i + 2}",
            }
            for i in range(40)
        ],
        "transcripts",
    ),
}


def test_init_writes_a_spec_for_each_layout_that_plans_loads_and_runs(tmp_path, tiny_model_path, capsys, monkeypatch):
    from sweep.data import load_preference_data
    from sweep.spec.load import load_spec

    monkeypatch.chdir(tmp_path)
    for name, (rows, layout) in LAYOUTS.items():
        (tmp_path / name).write_text("\n".join(json.dumps(r) for r in rows))
        assert main(["init", "--dataset", name]) == 0
        out, err = capsys.readouterr()
        spec_file = tmp_path / out.strip()
        assert spec_file.name == name.replace(".jsonl", ".yaml") and err.startswith(layout), err
        assert spec_file.read_text().startswith(f"# python -m sweep run {spec_file.name}\n")
        assert main(["plan", spec_file.name]) == 0 and "6 trials" in capsys.readouterr().out
        # its column mapping turns every row into a chat-formatted pair, the one shape trials train on
        pairs = load_preference_data(load_spec(spec_file.name).dataset)
        assert len(pairs["train"]) + len(pairs["eval"]) == len(rows)
        assert (
            pairs["train"][0]["prompt"][-1]["role"] == "user" and pairs["train"][0]["chosen"][0]["role"] == "assistant"
        )
    # Two of the specs (the transcripts and orca's, the layouts with the most to convert), shrunk
    # by overrides, run one after the other in one fresh interpreter, as from a notebook: the
    # first on a local Ray that `run` brings up and down, the second on a Ray the notebook
    # started itself, which `run` uses and leaves running.
    run = ["hh.jsonl", "orca.jsonl"]
    smoke = ["axes.loss_type=[ipo]", "axes.beta=[0.1]", "train.max_steps=2", "train.eval_steps=2", "save=none"]
    script = textwrap.dedent(f"""
        import json, ray, sweep
        codes = {{}}
        for i, name in enumerate({run!r}):
            if i == 1:
                assert not ray.is_initialized()  # the first run's own Ray is down
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            outcome = sweep.run(name.replace(".jsonl", ".yaml"), {smoke!r}, log=lambda *_: None)
            codes[name] = [outcome.exit_code, list(outcome.summary["status"])]
        codes["ray left running"] = ray.is_initialized()
        print(json.dumps(codes))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    codes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert codes == {**{name: [0, ["FINISHED"]] for name in run}, "ray left running": True}
    c, parents, children = mlflow_store(tmp_path, "orca")
    (spec_artifact,) = [a.path for a in c.list_artifacts(parents[0].info.run_id, "spec")]
    recorded = c.download_artifacts(parents[0].info.run_id, spec_artifact, str(tmp_path / "got"))
    text = open(recorded).read()
    assert text.startswith("# orca.yaml with --set overrides of: axes.loss_type, axes.beta, train.max_steps")
    recorded = yaml.safe_load(text)
    assert recorded["train"]["max_steps"] == 2 and recorded["axes"] == {"loss_type": ["ipo"], "beta": [0.1]}
    assert recorded["dataset"]["columns"]["prompt"] == "question"
    assert children[0].data.metrics["global_step"] == 2


def test_the_notebook_example_runs_the_default_sweep_and_agrees_with_export(tmp_path, tiny_model_path):
    """docs/python-api.md, cell by cell in a fresh interpreter; then the README's figures for
    the default sweep: tuned models say better things than the base."""
    cells = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "python-api.md").read_text(), re.DOTALL)
    assert len(cells) >= 5
    (tmp_path / "search_spaces").symlink_to(REPO / "search_spaces")
    keep = textwrap.dedent("""
        import pickle, torch
        from pathlib import Path
        from peft import get_peft_model_state_dict
        from safetensors.torch import load_file
        saved, on = load_file(f"{adapter_dir}/adapter_model.safetensors"), get_peft_model_state_dict(model)
        loaded = sorted(saved) == sorted(on) and all(torch.equal(saved[k], on[k].cpu()) for k in saved)
        pickle.dump({"trials": trials, "steps": steps, "best": (best.trial, best.point, best.metrics, str(adapter_dir)),
                     "answers": answers, "importance": sweep.importance("beta_grid").table,
                     "datasets": sweep.datasets("beta_grid"), "models": (sweep.models("beta_grid"), best.adapter_uri),
                     "loaded": (loaded, type(tokenizer).__name__),
                     "report files": (sorted(p.name for p in Path("plots").glob("*.png")), Path("report.html").is_file())},
                    open("nb.pkl", "wb"))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", "\n".join(cells) + keep],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "FINISHED 0 8" in proc.stdout and "proxy vs judge over 8 finished trials" in proc.stdout
    nb = pd.read_pickle(tmp_path / "nb.pkl")

    export = cli_in_process("export", "beta_grid", "--out", str(tmp_path / "t.csv"), cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    csv = pd.read_csv(tmp_path / "t.csv")
    trials = nb["trials"]
    assert len(trials) == 8 and trials.to_csv(index=False) == (tmp_path / "t.csv").read_text()  # the same table
    history = cli_in_process("export", "beta_grid", "--history", "--out", str(tmp_path / "h.csv"), cwd=tmp_path)
    assert history.returncode == 0
    h = pd.read_csv(tmp_path / "h.csv")
    h = h[h["metric"].isin(["eval_judge/score", "rewards/margins"])].reset_index(drop=True)
    assert len(nb["steps"]) == len(h) and (nb["steps"]["value"].to_numpy() == h["value"].to_numpy()).all()

    best_trial, point, metrics, adapter_dir = nb["best"]
    assert best_trial == csv.iloc[0]["trial"] and metrics["eval_judge/score"] == csv.iloc[0]["eval_judge/score"]
    assert point == {"loss_type": csv.iloc[0]["loss_type"], "beta": csv.iloc[0]["beta"]}
    assert (REPO / adapter_dir / "adapter_config.json").exists()
    assert nb["loaded"][0] and "Tokenizer" in nb["loaded"][1]  # best.load(): the base with that adapter on top
    assert len(nb["answers"]) == 100 and set(nb["answers"]["outcome"]) <= {"win", "tie", "loss"}
    assert sorted(nb["importance"]["axis"]) == ["beta", "loss_type"]
    figures, page = nb["report files"]  # report --plots and --html, as functions
    assert {"pareto_front.png", "parallel_coordinates.png"} <= set(figures) and page
    data = nb["datasets"]  # what the UI's Dataset column shows, in pandas
    assert list(zip(data["context"], data["name"], data["rows"])) == [
        ("training", "builtin:prefs train", 2000),
        ("evaluation", "builtin:prefs eval", 200),
    ]

    models, best_adapter = nb["models"]  # what the UI's Models tab lists, in pandas: an adapter per trial, ranked
    assert list(models["trial"]) == list(csv["trial"]) and set(models["model_type"]) == {"LoRA adapter"}
    assert (models["eval_judge/score"].to_numpy() == csv["eval_judge/score"].to_numpy()).all()
    assert best_adapter == models.iloc[0]["model_uri"] and best_adapter.startswith("models:/m-")

    # The same sweep in the MLflow UI, as `sweep ui` opens it: the 8 trials ranked, each with its adapter.
    from playwright.sync_api import sync_playwright

    c, parents, children = mlflow_store(tmp_path, "beta_grid")
    with sweep_ui(tmp_path, "beta_grid") as (_, urls), sync_playwright() as p:
        browser = chromium(p)
        page = ui_page(browser)
        rows = landing_rows(page, urls["runs"], children, "eval_judge/score", ["loss_type", "beta"])
        browser.close()
    assert [row["name"] for row in rows][0] in set(
        csv[csv["eval_judge/score"] == csv["eval_judge/score"].max()]["trial"]
    )
    assert all(row["attributes.`Models`"].startswith("adapter-") for row in rows)

    base = parents[0].data.metrics["base_judge/score"]
    best, worst = csv.iloc[0], csv.iloc[-1]  # ranked by eval_judge/score
    assert list(csv["eval_judge/score"]) == sorted(csv["eval_judge/score"], reverse=True)
    assert 0.3 < base < 0.75, base  # the SFT base answers well above zero, with room left
    assert best["eval_judge/score"] >= base + 0.15 and best["eval_judge/win_rate"] >= 0.6
    assert worst["eval_judge/score"] <= best["eval_judge/score"] - 0.1
    assert best["eval_judge/length"] < parents[0].data.metrics["base_judge/length"]
    # the report's proxy line names each metric's winner as the table ranks them
    proxies = set(csv["trial"][csv["eval_rewards/accuracies"] == csv["eval_rewards/accuracies"].max()])
    found = re.search(
        r"; both pick (\S+)|\nthey pick different winners: eval_rewards/accuracies picks (\S+), "
        r"eval_judge/score picks (\S+)\n",
        proc.stdout,
    )
    assert found, proc.stdout[-3000:]
    if found[1]:
        assert found[1] == best["trial"] and found[1] in proxies, found[0]
    else:
        assert found[2] in proxies and found[2] != best["trial"] and found[3] == best["trial"], found[0]
