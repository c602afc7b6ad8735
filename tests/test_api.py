"""The Python API as a notebook uses it, `--set` overrides, `init` from a dataset, and which axis mattered."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import yaml

from sweep.cli import main
from sweep.reports.importance import axis_importance
from sweep.spec.load import SpecError
from sweep.spec.overrides import apply_overrides

from .conftest import REPO, chromium, cli_in_process, landing_rows, mlflow_store, sweep_ui, ui_page

# ---- fast: pure functions and in-process commands -----------------------------------------------


def test_overrides_set_nested_fields_and_replace_axes():
    raw = {"name": "s", "axes": {"beta": [0.1]}, "train": {"max_steps": 60}}
    out = apply_overrides(raw, ["train.max_steps=5", "axes.beta=[0.1, 0.5]", "lora.r=4", "dataset.path=x.jsonl"])
    assert out == {
        "name": "s",
        "axes": {"beta": [0.1, 0.5]},
        "train": {"max_steps": 5},
        "lora": {"r": 4},
        "dataset": {"path": "x.jsonl"},
    }
    assert raw["train"]["max_steps"] == 60  # the file's data is not changed
    for bad, words in (
        ("train.max_steps", "KEY=VALUE"),
        ("name.x=1", "name is 's'"),
        ("axes.beta=[0.1", "not valid YAML"),
    ):
        with pytest.raises(SpecError, match=re.escape(words)):
            apply_overrides(raw, [bad])


def test_the_readmes_sweep_commands_plan():
    """Every `python -m sweep run|plan SPEC [--set ...]` line of the README names a spec that
    `plan` validates with those overrides (exit 0)."""
    lines = re.findall(
        r"^python -m sweep (?:run|plan) (search_spaces/\S+)(.*)$", (REPO / "README.md").read_text(), re.M
    )
    assert len(lines) >= 2
    for spec, rest in lines:
        words = shlex.split(rest.split("#")[0])
        sets = [w for i, w in enumerate(words) if i and words[i - 1] == "--set"]
        assert main(["plan", str(REPO / spec), *(a for s in sets for a in ("--set", s))]) == 0, (spec, rest)


def test_plan_with_overrides_is_checked_like_the_file(capsys):
    spec = str(REPO / "search_spaces" / "beta_grid.yaml")
    assert main(["plan", spec, "--set", "axes.beta=[0.1,0.5]", "--set", "train.max_steps=5"]) == 0
    out = capsys.readouterr().out
    assert "max_steps=5" in out and out.rstrip().endswith("\n4 trials")
    assert main(["plan", spec, "--set", "train.max_stepz=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: train.max_stepz") and "max_steps" in err[0]
    assert main(["plan", spec, "--set", "max_steps"]) == 2
    assert capsys.readouterr().err.startswith("error: --set: expects KEY=VALUE")


def test_the_proxy_line_names_each_metrics_winner_or_says_they_agree():
    """The report's "proxy vs judge" line: Spearman's rho, and the winner of each metric when
    they differ (the default sweep's proxy picks its worst model), one winner when they agree."""
    from sweep.reports.statistics import describe_agreement, proxy_vs_judge

    rows = [("a", 0.9, 0.2), ("b", 0.8, 0.5), ("c", 0.7, 0.9), ("d", 0.6, 0.8)]
    df = pd.DataFrame(
        [{"trial": t, "status": "FINISHED", "eval_rewards/accuracies": p, "eval_judge/score": j} for t, p, j in rows]
    )
    said = describe_agreement(proxy_vs_judge(df))
    assert (
        said.splitlines()[1] == "they pick different winners: eval_rewards/accuracies picks a, eval_judge/score picks c"
    )
    assert "Spearman rank correlation of eval_rewards/accuracies and eval_judge/score = -0.80" in said
    df.loc[df["trial"] == "a", "eval_judge/score"] = 1.0
    assert describe_agreement(proxy_vs_judge(df)).endswith("; both pick a")
    df.loc[df["trial"] != "a", "status"] = "FAILED"  # fewer than three finished: nothing to compare
    assert proxy_vs_judge(df) is None


def test_importance_finds_the_axis_that_moved_the_metric():
    rows = [
        {"status": "FINISHED", "beta": b, "loss_type": loss, "seed": s, "score": 0.5 + 0.2 * (b == 0.1) + 0.01 * s}
        for b in (0.01, 0.1, 1.0)
        for loss in ("sigmoid", "ipo")
        for s in (1, 2)
    ]
    rows.append({"status": "FAILED", "beta": 1.0, "loss_type": "ipo", "seed": 3, "score": None})
    found = axis_importance(pd.DataFrame(rows), ["loss_type", "beta", "seed"], "score", "max")
    table = found.table.set_index("axis")
    assert table.index[0] == "beta" and table.loc["beta", "importance"] > 0.8
    assert table.loc["beta", "best"] == 0.1 and table.loc["beta", "values"] == 3
    assert table["importance"].sum() == pytest.approx(1.0)
    assert "over 12 finished trials" in found.note  # the failed trial is left out
    few = axis_importance(pd.DataFrame(rows[:12:4]), ["beta"], "score", "max")  # three betas, one trial each
    assert few.table.empty and "too few finished trials (3)" in few.note
    # Every trial tied (an untrained judge, a saturated metric): said so, where fANOVA would raise.
    tied = axis_importance(pd.DataFrame([{**r, "score": 0.25} for r in rows]), ["beta", "seed"], "score", "max")
    assert tied.table.empty and "every finished trial has score = 0.25" in tied.note


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


def test_init_refuses_an_unknown_layout_naming_its_columns(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.jsonl").write_text("\n".join(json.dumps({"text": f"t{i}", "label": i % 2}) for i in range(8)))
    assert main(["init", "--dataset", "text.jsonl"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: dataset: columns text, label match no known layout")
    assert "prompt/chosen/rejected" in err[0] and not list(tmp_path.glob("*.yaml"))


def test_init_gives_a_real_model_qlora_settings_and_ranks_by_answers_where_there_is_an_answer_column(
    tmp_path, capsys, monkeypatch
):
    """A hub model gets the QLoRA recipe's settings (the embedded model its own); a dataset with
    an `answer` column gets a verifiable judge and is ranked by it, one without by the proxy."""
    from sweep.spec.load import load_spec

    monkeypatch.chdir(tmp_path)
    rows = [
        {"prompt": f"What is {i}+1?", "chosen": str(i + 1), "rejected": "no", "answer": str(i + 1)} for i in range(8)
    ]
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "plain.jsonl").write_text(
        "\n".join(json.dumps({k: r[k] for k in ("prompt", "chosen", "rejected")}) for r in rows)
    )
    assert main(["init", "--model", "org/chat-7b", "--dataset", "qa.jsonl"]) == 0
    real = load_spec(capsys.readouterr().out.strip())
    assert real.quantization["mode"] == "auto" and real.lora["r"] == 16 and real.train["gradient_checkpointing"] is True
    assert real.train["max_length"] == 1024 and real.judge.max_new_tokens == 128
    assert [s.name for s in real.judge.scorers] == ["verifiable"] and real.metric == "eval_judge/score"
    assert main(["init", "--dataset", "plain.jsonl"]) == 0
    embedded = load_spec(capsys.readouterr().out.strip())
    assert embedded.lora["r"] == 8 and embedded.judge.prompts == 0 and embedded.metric == "eval_rewards/accuracies"


# ---- integration: real Ray, MLflow and TRL ------------------------------------------------------


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
        from peft import get_peft_model_state_dict
        from safetensors.torch import load_file
        saved, on = load_file(f"{adapter_dir}/adapter_model.safetensors"), get_peft_model_state_dict(model)
        loaded = sorted(saved) == sorted(on) and all(torch.equal(saved[k], on[k].cpu()) for k in saved)
        pickle.dump({"trials": trials, "steps": steps, "best": (best.trial, best.point, best.metrics, str(adapter_dir)),
                     "answers": answers, "importance": sweep.importance("beta_grid").table,
                     "datasets": sweep.datasets("beta_grid"), "models": (sweep.models("beta_grid"), best.adapter_uri),
                     "loaded": (loaded, type(tokenizer).__name__)}, open("nb.pkl", "wb"))
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
