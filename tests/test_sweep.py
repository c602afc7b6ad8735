"""Sweeps end to end: `python -m sweep run` with real Ray Tune, real MLflow, real training."""

from __future__ import annotations

import pandas as pd
import pytest

from .conftest import mlflow_store


def test_sweep_tracks_every_step_in_mlflow(grid_sweep, sweeps_dir):
    assert grid_sweep.returncode == 0, grid_sweep.stderr[-3000:]
    c, parents, children = mlflow_store(sweeps_dir, "grid")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4
    parent_id = parents[0].info.run_id
    assert {r.info.run_name for r in children} == {
        f"loss_type={lt},beta={b}" for lt in ("sigmoid", "ipo") for b in (0.1, 0.5)
    }
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent_id
        assert run.data.params["sweep.beta"] in ("0.1", "0.5")
        assert run.data.params["sweep.loss_type"] == run.data.tags["sweep.loss_type"]
        # per-step train metrics (logging_steps=2 over 12 steps) and per-eval held-out metrics
        loss_steps = [m.step for m in c.get_metric_history(run.info.run_id, "loss")]
        assert loss_steps == [2, 4, 6, 8, 10, 12]
        for key in ("rewards/margins", "rewards/accuracies", "rewards/chosen", "logps/chosen", "logps/rejected"):
            assert len(c.get_metric_history(run.info.run_id, key)) == 6, key
        eval_steps = [m.step for m in c.get_metric_history(run.info.run_id, "eval_rewards/accuracies")]
        assert eval_steps == [6, 12]
        for key in ("eval_rewards/margins", "eval_loss", "eval_logps/chosen"):
            assert key in run.data.metrics, key
    # the spec, the summary and the plots are attached to the parent run
    assert [a.path for a in c.list_artifacts(parent_id, "spec")] == ["spec/grid.yaml"]
    top = {a.path for a in c.list_artifacts(parent_id)}
    assert "summary.csv" in top and "plots" in top


def test_summary_csv_matches_mlflow(grid_sweep, sweeps_dir):
    summary = pd.read_csv(sweeps_dir / "results" / "grid" / "summary.csv")
    c, _, children = mlflow_store(sweeps_dir, "grid")
    assert len(summary) == 4 and set(summary["status"]) == {"FINISHED"}
    assert list(summary.columns[:6]) == ["trial", "trial_id", "run_id", "status", "loss_type", "beta"]
    by_run = {r.info.run_id: r for r in children}
    for _, row in summary.iterrows():
        run = by_run[row["run_id"]]
        for key in ("eval_rewards/accuracies", "eval_rewards/margins", "eval_loss", "loss", "rewards/accuracies"):
            assert row[key] == pytest.approx(run.data.metrics[key]), key
        assert row["eval_margin/beta"] == pytest.approx(run.data.metrics["eval_rewards/margins"] / row["beta"])
        assert row["steps"] == 12
    # sorted by held-out reward accuracy, best first
    acc = summary["eval_rewards/accuracies"].tolist()
    assert acc == sorted(acc, reverse=True)
    # and printed on the console, with a line per finished trial
    assert "eval_rewards/accuracies" in grid_sweep.stdout
    assert all(f"[{i}/4] finished" in grid_sweep.stdout for i in range(1, 5))


def test_failing_trial_is_recorded_and_the_sweep_goes_on(failing_sweep, sweeps_dir):
    """A point that fails at run time is FAILED with its reason; the other trial finishes;
    the exit code says some failed."""
    assert failing_sweep.returncode == 1, failing_sweep.stderr[-3000:]
    _, parents, children = mlflow_store(sweeps_dir, "partly_bad")
    status = {r.data.params["sweep.target_modules"]: r for r in children}
    assert status["all-linear"].info.status == "FINISHED"
    failed = status["['no_such_module']"]
    assert failed.info.status == "FAILED"
    assert "no_such_module" in failed.data.tags["sweep.error"]
    assert parents[0].info.status == "FAILED"
    summary = pd.read_csv(sweeps_dir / "results" / "partly_bad" / "summary.csv")
    assert list(summary["status"]) == ["FINISHED", "FAILED"]  # failed ranked last, not dropped
    assert "no_such_module" in summary["error"].iloc[1]
    assert "FAILED" in failing_sweep.stdout
