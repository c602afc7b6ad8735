"""Sweeps end to end: `python -m sweep run` with real Ray Tune, real MLflow, real training."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import imported_modules, mlflow_store


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
    # MLflow 3's UI opens the experiment in its model-training view; the runs say what they are
    assert c.get_experiment(parents[0].info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    summary = pd.read_csv(sweeps_dir / "results" / "grid" / "summary.csv")
    note = parents[0].data.tags["mlflow.note.content"]
    assert (
        note.startswith("**sweep grid**: 4 trials over `loss_type` × `beta`")
        and "ranked by `eval_rewards/accuracies`" in note
    )
    assert f"**Best: {summary['trial'][0]}**" in note and "4 of 4 trials finished" in note
    assert all(
        r.data.tags["mlflow.note.content"].startswith(f"trial of sweep **grid** at {r.info.run_name}") for r in children
    )
    # the spec, the summary and the plots are attached to the parent run
    assert [a.path for a in c.list_artifacts(parent_id, "spec")] == ["spec/grid.yaml"]
    top = {a.path for a in c.list_artifacts(parent_id)}
    assert "summary.csv" in top and "plots" in top
    # the data, as MLflow dataset inputs (the runs table's Dataset column): the parent's and
    # every trial's the same two splits, with the rows the sweep used and the shipped file as source
    from sweep.builtin import BUILTIN_DATASETS

    def inputs(run):
        return sorted(
            (d.dataset.name, d.dataset.digest, d.dataset.source_type, json.loads(d.dataset.profile)["num_rows"])
            + tuple(t.value for t in d.tags if t.key == "mlflow.data.context")
            for d in run.inputs.dataset_inputs
        )

    parent = inputs(parents[0])
    assert [(name, kind, rows, context) for name, _, kind, rows, context in parent] == [
        ("builtin:prefs eval", "local", 64, "evaluation"),
        ("builtin:prefs train", "local", 400, "training"),
    ]
    assert parent[0][1] != parent[1][1] and all(inputs(run) == parent for run in children)
    source = json.loads(parents[0].inputs.dataset_inputs[0].dataset.source)["uri"]
    assert Path(source) == BUILTIN_DATASETS["prefs"]


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


def _tiny(name, **overrides):
    from tests.conftest import small_spec

    return small_spec(
        name,
        dataset={"max_train_rows": 64, "max_eval_rows": 16},
        train={"max_steps": 4, "eval_steps": 2, "logging_steps": 2},
        max_concurrent_trials=1,
        **overrides,
    )


def test_random_search_with_grid_and_zipped_axes(tmp_path, tiny_model_path):
    """Ray Tune's semantics (num_samples x grid points, zipped values together); sampled values
    within their bounds. (`plan`'s count for a 2 x 2 grid is checked in test_spec.)"""
    from tests.conftest import run_cli, write_spec

    spec = _tiny(
        "random_search",
        axes={
            "loss_type": ["ipo"],
            "learning_rate": {"loguniform": [1.0e-4, 1.0e-3]},
            "schedule": {"zip": {"max_steps": [4], "warmup_steps": [1]}},
        },
        search={"method": "random", "num_samples": 2},
    )
    del spec["train"]["learning_rate"], spec["train"]["max_steps"]
    # (-X importtime: the driver trains nothing and never imports torch, ~2 s of CPU per sweep)
    proc = run_cli("run", str(write_spec(tmp_path / "r.yaml", spec)), cwd=tmp_path, python_flags=("-X", "importtime"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = imported_modules(proc.stderr)
    assert "ray.tune" in imported and "torch" not in imported
    _, parents, children = mlflow_store(tmp_path, "random_search")
    assert parents[0].data.params["num_trials"] == "2" and len(children) == 2  # 2 samples x 1 grid point
    assert [r.data.params["sweep.loss_type"] for r in children] == ["ipo", "ipo"]
    lrs = [float(r.data.params["sweep.learning_rate"]) for r in children]
    assert all(1e-4 <= lr <= 1e-3 for lr in lrs) and len(set(lrs)) == 2
    assert {r.data.params["sweep.warmup_steps"] for r in children} == {"1"}
    assert all(r.info.status == "FINISHED" for r in children)


def test_optuna_search_runs_trials_it_proposes(tmp_path, tiny_model_path):
    from tests.conftest import run_cli, write_spec

    spec = _tiny(
        "bayes",
        axes={"beta": {"uniform": [0.05, 0.5]}, "loss_type": ["sigmoid", "ipo"]},
        search={"method": "optuna", "num_samples": 3},
    )
    proc = run_cli("run", str(write_spec(tmp_path / "o.yaml", spec)), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, parents, children = mlflow_store(tmp_path, "bayes")
    assert parents[0].data.params["search"] == "optuna x3"
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)
    assert all(0.05 <= float(r.data.params["sweep.beta"]) <= 0.5 for r in children)
    assert all(r.data.params["sweep.loss_type"] in ("sigmoid", "ipo") for r in children)
    assert "eval_rewards/accuracies" in children[0].data.metrics
    # Optuna's searcher proposed them (its state is saved beside Ray's), not Ray's random generator
    ray_dir = tmp_path / "results" / "bayes" / "ray"
    assert list(ray_dir.rglob("searcher-state-*.pkl")) and not list(ray_dir.rglob("basic-variant-state-*"))
