"""Sweeps end to end: `python -m sweep run` with real Ray Tune, real MLflow, real training."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from .conftest import run_cli, small_spec, write_spec


def _store(tmp_path, name):
    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = c.get_experiment_by_name(name)
    runs = c.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("sweep.kind") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep.kind") == "trial"]
    return c, parents, children


@pytest.fixture(scope="module")
def two_trial_sweep(tmp_path_factory, tiny_model_path):
    tmp_path = tmp_path_factory.mktemp("sweep2")
    spec = small_spec("two", axes={"loss_type": ["sigmoid", "ipo"], "beta": [0.5]})
    proc = run_cli("run", str(write_spec(tmp_path / "two.yaml", spec)), cwd=tmp_path)
    return tmp_path, proc


def test_two_trial_sweep_tracks_every_step_in_mlflow(two_trial_sweep):
    tmp_path, proc = two_trial_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    c, parents, children = _store(tmp_path, "two")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2
    parent_id = parents[0].info.run_id
    assert {r.info.run_name for r in children} == {"loss_type=sigmoid,beta=0.5", "loss_type=ipo,beta=0.5"}
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent_id
        assert run.data.params["sweep.beta"] == "0.5"
        assert run.data.params["sweep.loss_type"] == run.data.tags["sweep.loss_type"]
        # per-step train metrics (logging_steps=2 over 12 steps) and per-eval held-out metrics
        loss_steps = [m.step for m in c.get_metric_history(run.info.run_id, "loss")]
        assert loss_steps == [2, 4, 6, 8, 10, 12]
        for key in ("rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"):
            assert len(c.get_metric_history(run.info.run_id, key)) == 6, key
        eval_steps = [m.step for m in c.get_metric_history(run.info.run_id, "eval_rewards/accuracies")]
        assert eval_steps == [6, 12]
        for key in ("eval_rewards/margins", "eval_loss", "eval_logps/chosen"):
            assert key in run.data.metrics, key
    # the spec is attached to the parent run
    artifacts = [a.path for a in c.list_artifacts(parent_id, "spec")]
    assert artifacts == ["spec/two.yaml"]


def test_summary_csv_matches_mlflow(two_trial_sweep):
    tmp_path, proc = two_trial_sweep
    summary = pd.read_csv(tmp_path / "results" / "two" / "summary.csv")
    c, _, children = _store(tmp_path, "two")
    assert len(summary) == 2 and set(summary["status"]) == {"FINISHED"}
    assert list(summary.columns[:4]) == ["trial", "status", "loss_type", "beta"]
    by_run = {r.info.run_id: r for r in children}
    for _, row in summary.iterrows():
        run = by_run[row["run_id"]]
        for key in ("eval_rewards/accuracies", "eval_rewards/margins", "eval_loss", "loss"):
            assert row[key] == pytest.approx(run.data.metrics[key]), key
        assert row["eval_margin/beta"] == pytest.approx(run.data.metrics["eval_rewards/margins"] / 0.5)
        assert row["steps"] == 12
    # sorted by held-out reward accuracy, best first
    acc = summary["eval_rewards/accuracies"].tolist()
    assert acc == sorted(acc, reverse=True)
    # and printed on the console
    assert "eval_rewards/accuracies" in proc.stdout and "[2/2] finished" in proc.stdout


def test_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_model_path):
    """A point that fails at run time (LoRA on a module the model lacks) is FAILED with its reason;
    the other trial finishes; the exit code says some failed."""
    spec = small_spec("partly_bad", axes={"target_modules": ["all-linear", ["no_such_module"]]})
    proc = run_cli("run", str(write_spec(tmp_path / "bad.yaml", spec)), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    _, parents, children = _store(tmp_path, "partly_bad")
    status = {r.data.params["sweep.target_modules"]: r for r in children}
    assert status["all-linear"].info.status == "FINISHED"
    failed = status["['no_such_module']"]
    assert failed.info.status == "FAILED"
    assert "no_such_module" in failed.data.tags["sweep.error"]
    assert parents[0].info.status == "FAILED"
    summary = pd.read_csv(tmp_path / "results" / "partly_bad" / "summary.csv")
    assert sorted(summary["status"]) == ["FAILED", "FINISHED"]
    assert "FAILED" in proc.stdout
