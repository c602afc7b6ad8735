"""Judged generations: scorers, the per-prompt table, the base model's answers shared per sweep,
ranking and halving by a generation metric, and bad scorers refused before anything trains."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from sweep.record import judge_tables
from sweep.spec.load import SpecError, parse_spec
from tests.conftest import cli_in_process, mlflow_store, run_cli, small_spec, write_spec

RECORDING_SCORER = '''
import json, os

def brevity(prompts, completions, answer, task, **kwargs):
    """1 / (1 + words); records what it was given."""
    with open(os.environ["SCORER_LOG"], "a") as f:
        f.write(json.dumps({"keys": sorted(["prompts", "completions", "answer", "task", *kwargs]),
                            "prompts": prompts, "completions": completions, "answer": answer}) + "\\n")
    return [1.0 / (1 + len(c[0]["content"].split())) if c[0]["content"] else None for c in completions]
'''


@pytest.fixture(scope="session")
def reward_model(tmp_path_factory, tiny_model_path):
    """A tiny one-label sequence classifier with the builtin tokenizer: a reward model offline."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    path = tmp_path_factory.mktemp("rm") / "tiny-rm"
    config = AutoConfig.from_pretrained(tiny_model_path)
    config.num_labels = 1
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(path)
    return path


def _model_dir(tmp_path: Path, name: str, config: str) -> Path:
    """A folder that looks like a saved model, with `config` as its config.json."""
    (tmp_path / name).mkdir(exist_ok=True)
    (tmp_path / name / "config.json").write_text(config)
    return tmp_path / name


def _bad_scorer_cases(tmp_path: Path, tiny_model_path: Path):
    (tmp_path / "scorers_ok.py").write_text("def no_completions(prompts, answer):\n    return [1.0] * len(prompts)\n")
    (tmp_path / "no_slots.txt").write_text("Grade this: {question}")  # found beside the spec
    return [
        ("missing module", ["no_such_module:grade"], "judge.scorers[0]", "cannot import 'no_such_module'"),
        ("missing function", ["scorers_ok:nothing_here"], "judge.scorers[0]", "has no function 'nothing_here'"),
        ("wrong signature", ["scorers_ok:no_completions"], "judge.scorers[0]", "must take prompts and completions"),
        (
            "a causal LM, not a reward model",
            [str(tiny_model_path)],
            "judge.scorers[0]",
            "is not a sequence-classification",
        ),
        ("no such path", ["./no/such/rm"], "judge.scorers[0]", "no such directory"),
        (
            "config.json not JSON",
            [str(_model_dir(tmp_path, "not-json", "{oops"))],
            "judge.scorers[0]",
            "not readable JSON",
        ),
        ("config.json a list", [str(_model_dir(tmp_path, "a-list", "[1, 2]"))], "judge.scorers[0]", "holds a list"),
        (
            "architectures not a list",
            [str(_model_dir(tmp_path, "odd-archs", '{"architectures": 5}'))],
            "judge.scorers[0]",
            "is not a sequence-classification",
        ),
        ("unknown builtin", ["builtin:exactish"], "judge.scorers[0]", "valid: builtin:verifiable"),
        ("no scorer", [], "judge.scorers", "needs at least one scorer"),
        ("llm judge: no such model", ["llm:./no/such/judge"], "judge.scorers[0]", "judge model './no/such/judge'"),
        (
            "llm judge: unknown builtin",
            ["llm:builtin:oracle"],
            "judge.scorers[0]",
            "valid: builtin:tiny, builtin:judge",
        ),
        (
            "llm judge: a reward model",
            [{"llm": str(_model_dir(tmp_path, "rm", '{"architectures": ["LlamaForSequenceClassification"]}'))}],
            "judge.scorers[0]",
            "is not a causal language model",
        ),
        (
            "llm judge: unknown mode",
            [{"llm": "builtin:judge", "mode": "rank"}],
            "judge.scorers[0].mode",
            "pairwise, grade",
        ),
        (
            "llm judge: template without the answer slots",
            [{"llm": "builtin:judge", "mode": "grade", "template": "no_slots.txt"}],
            "judge.scorers[0].template",
            "lacks the slot(s) {answer}",
        ),
        (
            "llm judge: template not there",
            [{"llm": "builtin:judge", "template": "missing.txt"}],
            "judge.scorers[0].template",
            "cannot read template",
        ),
    ]


def test_bad_scorers_are_spec_errors(tmp_path, tiny_model_path, monkeypatch):
    """Validating a spec checks every scorer but runs no user code; a `module:function` is
    imported and checked where a run needs it (`check_functions`: `run`, `plan --import-scorers`),
    from beside the spec or the working directory, after the installed packages."""
    from sweep.trial.scorers import check_functions

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for case, bad, field, message in _bad_scorer_cases(tmp_path, tiny_model_path):
        with pytest.raises(SpecError) as e:
            spec = parse_spec(
                small_spec("bad", judge={"prompts": 8, "scorers": bad}), source=str(tmp_path / "bad.yaml")
            )
            check_functions(spec.judge.scorers, spec.import_paths())  # (a function's module is imported only here)
        assert e.value.field == field and message in str(e.value), case
    (tmp_path / "scorers_loud.py").write_text(
        "import pathlib\npathlib.Path('imported').touch()\ndef grade(prompts, completions, **kw):\n    return [1.0] * len(prompts)\n"
    )
    spec = parse_spec(small_spec("ok", judge={"prompts": 8, "scorers": ["scorers_loud:grade"]}), source="bad.yaml")
    assert not (tmp_path / "imported").exists()  # validated, not imported
    before = list(sys.path)
    check_functions(spec.judge.scorers, spec.import_paths())
    assert (tmp_path / "imported").exists() and sys.path[: len(before)] == before  # appended, never in front
    with pytest.raises(SpecError, match="is not produced by this sweep's judge"):
        parse_spec(
            small_spec("bad", judge={"prompts": 8, "scorers": ["builtin:verifiable"]}, metric="eval_judge/brevity")
        )
    with pytest.raises(SpecError, match="judge at every evaluation"):
        parse_spec(
            small_spec(
                "bad",
                judge={"prompts": 8, "scorers": ["builtin:verifiable"], "when": "end"},
                metric="eval_judge/score",
                scheduler={"type": "asha"},
            )
        )


def test_bad_scorer_ends_the_run_with_one_line_before_anything_is_written(tmp_path, tiny_model_path):
    (tmp_path / "scorers_bad.py").write_text(
        "def words(prompts, completions, **kw):\n    return ['many'] * len(completions)\n"
    )
    spec = small_spec("bad_scorer", judge={"prompts": 8, "scorers": ["scorers_bad:words"]})
    proc = run_cli("run", str(write_spec(tmp_path / "bad_scorer.yaml", spec)), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == (
        "error: judge.scorers[0]: scorers_bad:words returned a non-numeric score 'many'; scores are floats or None"
    )
    assert not (tmp_path / "results").exists()
    missing = str(
        write_spec(
            tmp_path / "bad_plan.yaml", small_spec("bad_scorer", judge={"prompts": 8, "scorers": ["scorers_bad:nope"]})
        )
    )
    proc = run_cli("plan", missing, cwd=tmp_path)  # offline validation: no user code runs
    assert proc.returncode == 0 and "imported when the sweep runs" in proc.stdout, proc.stderr
    (tmp_path / "pairwise.txt").write_text("Which is better, {answer_a} or {answer_b}?")
    no_question = small_spec(
        "bad_llm", judge={"prompts": 8, "scorers": [{"llm": "builtin:judge", "template": "pairwise.txt"}]}
    )
    proc = run_cli("run", str(write_spec(tmp_path / "bad_llm.yaml", no_question)), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert proc.stderr.startswith("error: judge.scorers[0].template: template ") and "{question}" in proc.stderr
    assert not (tmp_path / "results").exists()
    proc = run_cli("plan", missing, "--import-scorers", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "judge.scorers[0]: module 'scorers_bad' has no function 'nope'" in proc.stderr


def _table(c, run_id: str, path: str) -> pd.DataFrame:
    data = json.loads(Path(c.download_artifacts(run_id, path)).read_text())
    return pd.DataFrame(data["data"], columns=data["columns"])


def _in_process_sweep(tmp_path: Path, raw: dict, model_path: Path):
    """A sweep's parent run in a sqlite store under `tmp_path`, and the context its trials run
    in, in this process: (context, store URI, experiment id, parent run id)."""
    from sweep.record import tracking
    from sweep.trial.run import TrialContext

    spec = parse_spec(raw, source=str(tmp_path / f"{raw['name']}.yaml"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = tracking.ensure_experiment(uri, spec.name, tmp_path / "artifacts")
    parent = tracking.start_parent_run(uri, experiment, spec)
    ctx = TrialContext(
        spec=spec,
        model_path=str(model_path),
        tracking_uri=uri,
        experiment_id=experiment,
        parent_run_id=parent,
        trials_dir=str(tmp_path / "trials"),
        cache_dir=str(tmp_path / "cache"),
        import_paths=spec.import_paths(),
    )
    return ctx, uri, experiment, parent


def test_trials_judge_with_every_kind_of_scorer_and_share_the_base_answers(
    tmp_path, tiny_model_path, reward_model, monkeypatch
):
    from sweep.record import tracking
    from sweep.trial.run import run_trial

    (tmp_path / "my_scorers.py").write_text(textwrap.dedent(RECORDING_SCORER))
    monkeypatch.setenv("SCORER_LOG", str(tmp_path / "calls.jsonl"))
    raw = small_spec(
        "judged",
        results_dir=str(tmp_path / "results"),
        train={"max_steps": 8, "eval_steps": 4},
        judge={
            "prompts": 12,
            "max_new_tokens": 16,
            "batch_size": 5,
            "scorers": [
                "builtin:verifiable",
                {"function": "my_scorers:brevity", "weight": 0.5},
                {"reward_model": str(reward_model), "name": "rm", "weight": 0.25},
            ],
        },
    )
    ctx, uri, experiment, parent = _in_process_sweep(tmp_path, raw, tiny_model_path)
    finals = [run_trial(ctx, {"beta": beta}) for beta in (0.1, 0.5)]

    calls = [json.loads(line) for line in open(tmp_path / "calls.jsonl")]
    # the callable: GRPO's keyword arguments, message lists for a chat dataset, the dataset's other columns
    assert calls[0]["keys"] == ["answer", "chosen", "completions", "flaw", "prompts", "rejected", "task"]
    assert calls[0]["prompts"][0][0]["role"] == "user" and calls[0]["completions"][0][0]["role"] == "assistant"
    # the base model's answers were scored once for the sweep: 1 + 2 evaluations x 2 trials
    assert len(calls) == 1 + 2 * 2
    c = tracking.client(uri)
    base = c.get_run(parent).data.metrics
    base_table = _table(c, parent, judge_tables.BASE_TABLE)
    assert base["base_judge/score"] == pytest.approx(base_table["score"].mean())
    assert len(list((tmp_path / "cache").glob("judge-*.json"))) == 1

    runs = tracking.trial_runs(tracking.SweepRun(uri, experiment, parent))
    assert len(runs) == 2
    for run, final in zip(runs, finals):
        history = {
            k: {m.step: m.value for m in c.get_metric_history(run.info.run_id, k)}
            for k in (
                "eval_judge/score",
                "eval_judge/win_rate",
                "eval_judge/length",
                "eval_judge/verifiable",
                "eval_judge/brevity",
                "eval_judge/rm",
            )
        }
        assert all(sorted(h) == [4, 8] for h in history.values()), history
        assert final["eval_judge/score"] == history["eval_judge/score"][8]
        for step in (4, 8):
            table = _table(c, run.info.run_id, f"judge/step-{step:06d}.json")
            assert len(table) == 12 and list(table["base"]) == list(base_table["answer"])
            # every metric re-derives from the table: weighted totals, means, wins with ties at half
            total = table["verifiable"] + 0.5 * table["brevity"].fillna(0) + 0.25 * table["rm"]
            assert list(table["score"]) == pytest.approx(list(total))
            assert history["eval_judge/score"][step] == pytest.approx(table["score"].mean())
            assert history["eval_judge/rm"][step] == pytest.approx(table["rm"].mean())
            wins = [1.0 if s > b else 0.5 if s == b else 0.0 for s, b in zip(table["score"], table["base_score"])]
            assert history["eval_judge/win_rate"][step] == pytest.approx(sum(wins) / len(wins))
            assert list(table["outcome"]) == [{1.0: "win", 0.5: "tie", 0.0: "loss"}[w] for w in wins]
            assert history["eval_judge/length"][step] == pytest.approx(table["length"].mean())


def test_a_sweep_judges_with_a_callable_beside_its_spec_and_a_local_reward_model(
    tmp_path, tiny_model_path, reward_model, monkeypatch
):
    """End to end through Ray: the callable is imported in the trials' workers from the spec's
    folder (not the working directory), the reward model is loaded there."""
    spec_dir, cwd = tmp_path / "specs", tmp_path / "work"
    spec_dir.mkdir(), cwd.mkdir()
    (spec_dir / "my_scorers.py").write_text(textwrap.dedent(RECORDING_SCORER))
    spec = small_spec(
        "judged_sweep",
        max_concurrent_trials=1,
        train={"max_steps": 6, "eval_steps": 6},
        judge={
            "prompts": 10,
            "max_new_tokens": 12,
            "when": "end",
            "scorers": ["builtin:verifiable", "my_scorers:brevity", {"reward_model": str(reward_model), "name": "rm"}],
        },
    )
    monkeypatch.setenv("SCORER_LOG", str(tmp_path / "calls.jsonl"))  # the trials' workers inherit it
    proc = run_cli("run", str(write_spec(spec_dir / "judged.yaml", spec)), cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    c, parents, children = mlflow_store(cwd, "judged_sweep")
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    for run in children:
        for key in (
            "eval_judge/verifiable",
            "eval_judge/brevity",
            "eval_judge/rm",
            "eval_judge/score",
            "eval_judge/win_rate",
        ):
            assert [m.step for m in c.get_metric_history(run.info.run_id, key)] == [6], key
    assert "base_judge/rm" in parents[0].data.metrics
    # the driver's probe (2 rows), the base model's answers once, each trial's final evaluation
    assert sorted(len(json.loads(line)["completions"]) for line in open(tmp_path / "calls.jsonl")) == [2, 10, 10, 10]


def test_halving_ranks_trials_by_what_they_say(tmp_path, tiny_model_path):
    """beta=10 keeps the policy at its hedging SFT reference: the judge ranks it last where
    held-out reward accuracy ranks it first. Halving by the judge's score stops it at the first rung."""
    spec = small_spec(
        "halving_judged",
        axes={"beta": [0.01, 0.1, 1.0, 10.0]},
        dataset={"max_train_rows": None, "max_eval_rows": 200},
        train={
            "max_steps": 40,
            "eval_steps": 20,
            "per_device_train_batch_size": 16,
            "warmup_steps": 5,
            "logging_steps": 5,
            "per_device_eval_batch_size": 50,
        },
        judge={"prompts": 60, "scorers": ["builtin:verifiable"], "max_new_tokens": 24, "batch_size": 60},
        scheduler={"type": "halving", "grace_period": 1, "reduction_factor": 2},
        metric="eval_judge/score",
    )
    proc = run_cli("run", str(write_spec(tmp_path / "h.yaml", spec)), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    c, _, children = mlflow_store(tmp_path, "halving_judged")
    first = {}  # beta -> (judge score, reward accuracy) at the first rung, and how far it trained
    for run in children:
        history = {
            k: {m.step: m.value for m in c.get_metric_history(run.info.run_id, k)}
            for k in ("eval_judge/score", "eval_rewards/accuracies")
        }
        first[float(run.data.params["sweep.beta"])] = (
            history["eval_judge/score"][20],
            history["eval_rewards/accuracies"][20],
            int(run.data.metrics["global_step"]),
        )
    went_on = {b for b, (_, _, steps) in first.items() if steps == 40}
    stopped = set(first) - went_on
    assert len(went_on) == 2 and min(first[b][0] for b in went_on) >= max(first[b][0] for b in stopped)
    assert 10.0 in stopped and max(first, key=lambda b: first[b][1]) == 10.0  # the proxy would have kept it
    report = cli_in_process("report", "halving_judged", "--format", "json", cwd=tmp_path)
    ranked = json.loads(report.stdout)
    assert ranked["ranked_by"] == "eval_judge/score" and ranked["trials"][0]["beta"] in went_on


def test_simpo_and_orpo_also_get_dpo_accuracy_against_the_base(tiny_model_path, tmp_path):
    """Every family has both yardsticks: their own reference-free rewards are kept under their
    family's name, and `eval_rewards/*` is DPO's implicit reward against the base model, which
    `evaluate` recomputes from the saved adapter."""
    from sweep.record import tracking
    from sweep.spec.points import point_id
    from sweep.trial.finished import VERIFIED, verify
    from sweep.trial.run import TrialContext, run_trial

    spec = parse_spec(
        small_spec(
            "families",
            results_dir=str(tmp_path),
            axes={"loss_type": ["simpo", "orpo"]},
            train={"max_steps": 4, "eval_steps": 4},
            save="all",
        )
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = tracking.ensure_experiment(uri, "families", tmp_path / "artifacts")
    parent = tracking.start_parent_run(uri, experiment, spec)
    ctx = TrialContext(spec, str(tiny_model_path), uri, experiment, parent, str(tmp_path / "trials"))
    reports = []
    for loss, family, trainer in (("simpo", "cpo", "CPOTrainer"), ("orpo", "orpo", "ORPOTrainer")):
        metrics = run_trial(ctx, {"loss_type": loss}, report=reports.append)
        saved = json.loads((tmp_path / "trials" / point_id({"loss_type": loss}) / tracking.TRIAL_CONFIG).read_text())
        assert saved["trainer"].endswith(trainer), (loss, saved["trainer"])
        # The same core names as DPO trials: every family lands in one table, ranked by one metric.
        for key in ("loss", "rewards/chosen", "rewards/rejected", "eval_loss"):
            assert key in metrics, (loss, key)
        assert reports[-1]["global_step"] == 4 and "eval_rewards/accuracies" in reports[-1]
        assert f"eval_{family}/rewards/accuracies" in metrics and f"eval_{family}/rewards/margins" in metrics, loss
        assert 0 <= metrics["eval_rewards/accuracies"] <= 1
        # DPO's margin is beta x a log-ratio to the base: 4 small LoRA steps keep it far below the family's own
        assert abs(metrics["eval_rewards/margins"]) < abs(metrics[f"eval_{family}/rewards/margins"]), loss
    runs = tracking.trial_runs(tracking.SweepRun(uri, experiment, parent))
    assert sorted(r.data.tags[tracking.TAG_LOSS] for r in runs) == ["orpo", "simpo"]
    for run in runs:  # what `sweep evaluate` does for each trial
        result = verify(uri, run, log=lambda *_: None)
        for key in VERIFIED:
            assert result[key] == pytest.approx(result[f"logged_{key}"], abs=1e-3), (
                run.data.tags[tracking.TAG_LOSS],
                key,
            )


def test_paired_stopping_stops_the_trial_whose_answers_are_worse_in_a_sweep(tmp_path, tiny_model_path):
    """A sweep with `scheduler: paired`, one trial at a time: lr=1e-7 answers as the base model
    does, worse on the same prompts than lr=1e-3 (which ran first), and is stopped early; a spec
    asking for `paired` without judging at every evaluation is refused in one line."""
    spec = small_spec(
        "paired",
        axes={"learning_rate": [1.0e-3, 1.0e-7]},
        max_concurrent_trials=1,
        train={"max_steps": 18, "eval_steps": 6},
        scheduler={"type": "paired", "grace_period": 1},
        judge={"prompts": 48, "scorers": ["builtin:verifiable"], "max_new_tokens": 12, "batch_size": 48},
        metric="eval_judge/score",
    )
    del spec["train"]["learning_rate"]
    proc = run_cli("run", str(write_spec(tmp_path / "p.yaml", spec)), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _, _, children = mlflow_store(tmp_path, "paired")
    by_lr = {r.data.params["sweep.learning_rate"]: r for r in children}
    assert by_lr["0.001"].info.status == "FINISHED" and by_lr["0.001"].data.metrics["global_step"] == 18
    slow = by_lr["1e-07"]
    assert slow.info.status == "KILLED" and slow.data.tags.get("sweep.stopped_early") == "true"
    assert slow.data.metrics["global_step"] < 18 and "eval_judge/score" in slow.data.metrics
    with pytest.raises(SpecError, match=r"^scheduler.type: paired compares trials' judged answers"):
        parse_spec({**spec, "judge": {**spec["judge"], "when": "end"}})


@pytest.fixture(scope="session")
def judge_model(sweep_env, tiny_model_path):
    """builtin:judge (builtin:tiny fine-tuned to judge its tasks), built once per session."""
    from filelock import FileLock

    from sweep.builtin import builtin_model_path

    with FileLock(str(sweep_env / "build.lock")):
        return builtin_model_path("judge", log=lambda *_: None)


def _held_out(n: int) -> list[dict]:
    from sweep.builtin import BUILTIN_DATASETS

    return [json.loads(line) for line in open(BUILTIN_DATASETS["prefs"] / "test.jsonl")][:n]


def test_the_llm_judge_reads_both_orders_ties_disagreements_and_counts_unparseable_verdicts(judge_model):
    """Real verdicts of builtin:judge, asked twice per prompt with the answers swapped."""
    from sweep.trial.judge import judge_answers
    from sweep.trial.llm_judge import pairwise_outcome, parse_verdict
    from sweep.trial.scorers import parse_scorer

    rows = _held_out(48)
    prompts = [r["prompt"] for r in rows]
    right = [r["chosen"][-1]["content"] for r in rows]
    other = [r["rejected"][-1]["content"] for r in rows]
    judge = parse_scorer("s", "llm:builtin:judge")
    said = judge_answers(judge, prompts, right, other, "cpu", batch_size=16)
    for score, raw, row in zip(said.scores, said.raw, rows, strict=True):
        first, second = raw.removeprefix("trial as A: ").split(" | trial as B: ")
        # the score is the two orders' verdicts combined: agreeing ones decide, disagreeing ones tie
        assert score == pairwise_outcome(parse_verdict("pairwise", first), parse_verdict("pairwise", second))
        if row["flaw"] == "rambling":  # what this judge was trained to see: the right answer beats a hedged one
            assert score == 1.0, raw
    verdicts = [[parse_verdict("pairwise", v) for v in raw.split(" | ")] for raw in said.raw]
    # the same letter in both orders: the judge preferred a position, not an answer
    disagreeing = [s for s, (x, y) in zip(said.scores, verdicts) if x == y and x in ("A", "B")]
    assert disagreeing and set(disagreeing) == {0.5}, said.raw
    # the base model against itself is a tie, without asking the judge
    assert judge_answers(judge, prompts, right, None, "cpu", 16).scores == [0.5] * len(rows)
    # a verdict cut short is unparseable: no score, never guessed
    cut = parse_scorer("s", {"llm": "builtin:judge", "max_new_tokens": 4})
    assert judge_answers(cut, prompts[:8], right[:8], other[:8], "cpu", 8).scores == [None] * 8
    grades = judge_answers(
        parse_scorer("s", {"llm": "builtin:judge", "mode": "grade"}), prompts, other, None, "cpu", 16
    )
    hedged = [g for g, row in zip(grades.scores, rows) if row["flaw"] == "rambling"]
    assert hedged and all(g == 6.0 for g in hedged), grades.raw


def test_a_trial_judged_by_an_llm_logs_win_rate_length_control_unparsed_and_verdicts(
    tmp_path, tiny_model_path, judge_model
):
    from sweep.record import tracking
    from sweep.trial.llm_judge import length_controlled_win_rate
    from sweep.trial.run import run_trial

    raw = small_spec(
        "llm_judged",
        axes={"beta": [0.1]},
        train={"max_steps": 6, "eval_steps": 6},
        judge={
            "prompts": 16,
            "max_new_tokens": 16,
            "scorers": [
                "llm:builtin:judge",
                {"llm": "builtin:judge", "mode": "grade", "name": "grade", "weight": 0},
                {"llm": "builtin:judge", "max_new_tokens": 4, "name": "cut", "weight": 0},
            ],
        },
        metric="eval_judge/llm_judge",
    )
    ctx, uri, experiment, parent = _in_process_sweep(tmp_path, raw, tiny_model_path)
    final = run_trial(ctx, {"beta": 0.1})
    c = tracking.client(uri)
    (run,) = tracking.trial_runs(tracking.SweepRun(uri, experiment, parent))
    table = _table(c, run.info.run_id, "judge/step-000006.json")
    assert len(table) == 16 and table["llm_judge_verdict"].str.contains("trial as B").all()
    assert final["eval_judge/llm_judge"] == pytest.approx(table["llm_judge"].mean())
    assert final["eval_judge/grade"] == pytest.approx(table["grade"].mean())
    outcomes = [None if pd.isna(v) else v for v in table["llm_judge"]]
    lc = length_controlled_win_rate(outcomes, list(table["length"]), list(table["base_length"]))
    assert final["eval_judge/llm_judge_lc"] == pytest.approx(lc)
    assert final["eval_judge/cut_unparsed"] == 16 and "eval_judge/cut" not in final  # counted, not guessed
    assert final["eval_judge/llm_judge_unparsed"] == table["llm_judge"].isna().sum()
    # the base model's grades are on the parent, once; against itself it ties
    base = c.get_run(parent).data.metrics
    assert base["base_judge/llm_judge"] == 0.5 and 1 <= base["base_judge/grade"] <= 10


def test_the_harness_scores_a_trial_and_the_base_as_lm_eval_does_directly(tmp_path, tiny_model_path):
    """lm-evaluation-harness on the trial's policy (adapter on, in memory) and once on the base
    model; the same scores as `lm_eval.simple_evaluate` on the saved adapter and the base model."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sweep.builtin import harness_task_folder
    from sweep.record import tracking
    from sweep.trial.run import run_trial

    raw = small_spec(
        "harnessed",
        axes={"beta": [0.1]},
        train={"max_steps": 12, "eval_steps": 12, "learning_rate": 2e-3},
        harness={"tasks": [{"task": "builtin:prefs_choice", "limit": 60}], "chat_template": True, "margin": 0.0},
        save="all",
    )
    ctx, uri, _, parent = _in_process_sweep(tmp_path, raw, tiny_model_path)
    final = run_trial(ctx, {"beta": 0.1})
    (adapter,) = (tmp_path / "trials").glob(f"*/{tracking.ADAPTER}")

    def direct(model) -> float:
        results = lm_eval.simple_evaluate(
            model=HFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(tiny_model_path), batch_size=16),
            tasks=["prefs_choice"],
            task_manager=TaskManager(include_path=str(harness_task_folder("prefs_choice")), include_defaults=False),
            limit=60,
            apply_chat_template=True,
        )
        return results["results"]["prefs_choice"]["acc,none"]

    base_model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    base = direct(base_model)
    trial = direct(PeftModel.from_pretrained(base_model, str(adapter)).eval())
    assert final["harness/prefs_choice/acc"] == pytest.approx(trial)
    assert tracking.client(uri).get_run(parent).data.metrics["base_harness/prefs_choice/acc"] == pytest.approx(base)
    assert final["harness/prefs_choice/acc/vs_base"] == pytest.approx(trial - base)
    assert final["harness/worst_vs_base"] == pytest.approx(trial - base)
    assert final["harness/regressed"] == float(trial - base < 0)  # margin 0: any loss is flagged
    assert len(list((tmp_path / "cache").glob("harness-*.json"))) == 1  # the base scored once for the sweep


def test_a_harness_task_lm_eval_does_not_know_is_one_line_before_ray_starts(tmp_path):
    spec_file = write_spec(tmp_path / "unknown.yaml", small_spec("unknown", harness={"tasks": [{"task": "gsm8kk"}]}))
    proc = run_cli("run", str(spec_file), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert proc.stderr.startswith("error: harness.tasks[0].task: unknown lm-eval task 'gsm8kk'; did you mean 'gsm8k'?")
    assert not (tmp_path / "results").exists()


def test_the_yardsticks_spec_judges_by_llm_and_harness_and_reports_the_front(tmp_path, judge_model):
    """search_spaces/yardsticks.yaml as shipped, made smaller with --set: every trial finishes or
    is stopped early by `paired`, summary.csv has the LLM judge's and the harness's columns, and
    the report's Pareto front weighs the worst benchmark difference from the base model."""
    from tests.conftest import REPO

    smaller = ["axes.beta=[0.1, 10.0]", "train.max_steps=20", "train.eval_steps=10", "judge.prompts=16"]
    smaller.append("harness.tasks=[{task: builtin:prefs_choice, limit: 40}]")
    args = [a for s in smaller for a in ("--set", s)]
    proc = run_cli("run", str(REPO / "search_spaces" / "yardsticks.yaml"), *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = pd.read_csv(tmp_path / "results" / "yardsticks" / "summary.csv")
    assert len(summary) == 4 and set(summary["status"]) <= {"FINISHED", "STOPPED_EARLY"}, summary["status"]
    finished = summary[summary["status"] == "FINISHED"]
    for column in (
        "eval_judge/llm_judge",
        "eval_judge/llm_judge_lc",
        "eval_judge/llm_judge_unparsed",
        "harness/prefs_choice/acc",
        "harness/prefs_choice/acc/vs_base",
        "harness/worst_vs_base",
    ):
        assert column in summary and finished[column].notna().all(), column
    report = json.loads(run_cli("report", "yardsticks", "--format", "json", cwd=tmp_path).stdout)
    assert report["pareto_front"]["objectives"] == {
        "eval_judge/score": "max",
        "eval_judge/length": "min",
        "harness/worst_vs_base": "max",
    }
    assert report["pareto_front"]["trials"] and "base_harness/prefs_choice/acc" in report["base_model"]
