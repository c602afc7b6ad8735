"""The Python API without a sweep: `--set` overrides, `plan`, `init` from a dataset, which axis
mattered, the proxy's line."""

from __future__ import annotations

import json
import re
import shlex

import pandas as pd
import pytest

from sweep.cli import main
from sweep.reports.importance import axis_importance
from sweep.spec.load import SpecError
from sweep.spec.overrides import apply_overrides
from tests.conftest import REPO


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
