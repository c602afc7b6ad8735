"""Reports read from MLflow: terminal tables, CSV exports and plots agree with each other and the store."""

from __future__ import annotations

import json
import re

import mlflow
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import cli_in_process, mlflow_store


@pytest.fixture(scope="session")
def exported(grid_sweep, failing_sweep, sweeps_dir):
    assert grid_sweep.returncode == 0, grid_sweep.stderr[-2000:]
    out = sweeps_dir / "grid_export.csv"
    proc = cli_in_process("export", "grid", "--out", str(out), cwd=sweeps_dir)
    assert proc.returncode == 0, proc.stderr
    return pd.read_csv(out)


def test_export_matches_search_runs_and_metric_history(exported, sweeps_dir):
    mlflow.set_tracking_uri(f"sqlite:///{sweeps_dir / 'results' / 'mlflow.db'}")
    try:
        runs = mlflow.search_runs(experiment_names=["grid"], filter_string="tags.`sweep.kind` = 'trial'")
    finally:
        mlflow.set_tracking_uri(None)  # it also set $MLFLOW_TRACKING_URI, which later sweeps would inherit
    runs = runs.set_index("run_id")
    c, _, _ = mlflow_store(sweeps_dir, "grid")
    assert len(exported) == 4
    # stable leading columns, then the swept values, then every final metric
    assert list(exported.columns[:7]) == [
        "trial",
        "trial_id",
        "run_id",
        "status",
        "loss_type",
        "beta",
        "eval_rewards/accuracies",
    ]
    for key in ("logps/chosen", "eval_logps/rejected", "rewards/chosen", "grad_norm", "learning_rate"):
        assert key in exported.columns, key
    for _, row in exported.iterrows():
        run = runs.loc[row["run_id"]]
        assert row["loss_type"] == run["params.sweep.loss_type"] and row["beta"] == float(run["params.sweep.beta"])
        for key in ("eval_rewards/accuracies", "eval_rewards/margins", "eval_loss", "loss", "logps/chosen"):
            assert row[key] == pytest.approx(run[f"metrics.{key}"]), key
        history = [m.value for m in c.get_metric_history(row["run_id"], "eval_rewards/accuracies")]
        assert row["best_eval_rewards/accuracies"] == pytest.approx(max(history))
        assert row["eval_rewards/accuracies"] == pytest.approx(history[-1])


def test_export_history_is_long_form_per_step(grid_sweep, sweeps_dir):
    out = sweeps_dir / "grid_history.csv"
    assert cli_in_process("export", "grid", "--out", str(out), "--history", cwd=sweeps_dir).returncode == 0
    hist = pd.read_csv(out)
    assert {"trial", "run_id", "loss_type", "beta", "metric", "step", "value"} <= set(hist.columns)
    c, _, children = mlflow_store(sweeps_dir, "grid")
    run = children[0]
    mine = hist[(hist["run_id"] == run.info.run_id) & (hist["metric"] == "rewards/margins")]
    expected = c.get_metric_history(run.info.run_id, "rewards/margins")
    assert mine["step"].tolist() == [m.step for m in expected]
    assert mine["value"].tolist() == pytest.approx([m.value for m in expected])


def test_report_json_agrees_with_export(exported, sweeps_dir):
    proc = cli_in_process("report", "grid", "--format", "json", cwd=sweeps_dir)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["ranked_by"] == "eval_rewards/accuracies"
    assert [t["run_id"] for t in rep["trials"]] == exported["run_id"].tolist()
    # best trial per loss type = the top row of that loss type in the export
    for best in rep["best_per_loss_type"]:
        top = exported[exported["loss_type"] == best["loss_type"]].iloc[0]
        assert best["eval_rewards/accuracies"] == pytest.approx(top["eval_rewards/accuracies"])
    # the loss_type x beta pivot holds the same numbers
    for _, row in exported.iterrows():
        assert rep["pivot"][row["loss_type"]][str(row["beta"])] == pytest.approx(row["eval_rewards/accuracies"])


def test_report_table_and_markdown(grid_sweep, sweeps_dir):
    proc = cli_in_process("report", "grid", "--metric", "eval_rewards/margins", "--format", "markdown", cwd=sweeps_dir)
    assert proc.returncode == 0, proc.stderr
    assert "ranked by eval_rewards/margins" in proc.stdout
    assert "## best trial per loss type" in proc.stdout and "## eval_rewards/margins: loss_type x beta" in proc.stdout
    assert re.search(r"^\| status +\| loss_type", proc.stdout, re.M)
    assert re.search(r"^\|[:-]+\|", proc.stdout, re.M)  # a markdown header rule


def test_failed_trials_are_marked_not_dropped(failing_sweep, sweeps_dir):
    proc = cli_in_process("report", "partly_bad", cwd=sweeps_dir)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "1 trial(s) did not finish" in proc.stdout
    table = [line for line in lines if line.startswith(("FINISHED", "  FAILED", "FAILED"))]
    assert [line.split()[0] for line in table] == ["FINISHED", "FAILED"]


def test_plots_are_real_figures(grid_sweep, sweeps_dir):
    out = sweeps_dir / "plots"
    proc = cli_in_process("report", "grid", "--plots", str(out), cwd=sweeps_dir)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["eval_rewards_accuracies_vs_beta.png", "parallel_coordinates.png", "training_curves.png"]
    for name in names:
        img = Image.open(out / name).convert("L")
        assert img.width >= 600 and img.height >= 400
        lo, hi = img.getextrema()
        assert hi - lo > 100  # drawn lines and text, not a blank canvas
        assert len(set(img.getdata())) > 20


def test_report_says_which_axis_mattered(grid_sweep, sweeps_dir):
    proc = cli_in_process("report", "grid", "--format", "json", cwd=sweeps_dir)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)["importance"]
    assert sorted(a["axis"] for a in found["axes"]) == ["beta", "loss_type"]
    assert sum(a["importance"] for a in found["axes"]) == pytest.approx(1.0)
    assert "fANOVA (Optuna) over 4 finished trials" in found["note"]
    text = cli_in_process("report", "grid", cwd=sweeps_dir).stdout
    assert "what mattered:" in text and re.search(r"^  (beta|loss_type) +\d+\.\d%", text, re.MULTILINE)


def test_compare_and_list(grid_sweep, failing_sweep, sweeps_dir):
    proc = cli_in_process("compare", "grid", "partly_bad", "--format", "json", cwd=sweeps_dir)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["sweep"], r["rank"]) for r in rows][:4] == [("grid", 1), ("grid", 2), ("grid", 3), ("partly_bad", 1)]
    proc = cli_in_process("list", cwd=sweeps_dir)
    assert proc.returncode == 0, proc.stderr
    by_name = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:]}
    assert by_name["grid"][1:4] == ["FINISHED", "4", "4"]
    assert by_name["partly_bad"][1:5] == ["FAILED", "2", "1", "1"]


def test_unknown_sweep_is_a_clear_error(grid_sweep, sweeps_dir):
    proc = cli_in_process("report", "nope", cwd=sweeps_dir)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: no sweep named 'nope'") and "grid" in proc.stderr


def test_report_shows_the_pareto_front_and_refuses_metrics_no_trial_logged(grid_sweep, sweeps_dir, tmp_path):
    """`report --objective` (repeatable) gives the front in the terminal, JSON and a figure; a
    metric or objective no trial logged is one line naming it, exit 2."""
    from sweep.reports.statistics import pareto_front

    args = ["--objective", "eval_rewards/accuracies:max", "--objective", "eval_loss:min"]
    proc = cli_in_process("report", "grid", *args, "--format", "json", cwd=sweeps_dir)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    front = report["pareto_front"]
    assert front["objectives"] == {"eval_rewards/accuracies": "max", "eval_loss": "min"}
    expected = pareto_front(pd.DataFrame(report["trials"]), front["objectives"])
    assert [t["trial"] for t in front["trials"]] == list(expected["trial"]) and len(expected)
    page = tmp_path / "grid.html"
    proc = cli_in_process("report", "grid", *args, "--plots", str(tmp_path), "--html", str(page), cwd=sweeps_dir)
    said = "Pareto front over eval_rewards/accuracies (higher better) and eval_loss (lower better)"
    assert proc.returncode == 0 and said in proc.stdout and said in page.read_text()
    assert Image.open(tmp_path / "pareto_front.png").size[0] > 500 and "alt='pareto_front'" in page.read_text()
    for bad, field in ((["--metric", "eval_los"], "--metric"), (["--objective", "eval_los:min"], "--objective")):
        proc = cli_in_process("report", "grid", *bad, cwd=sweeps_dir)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
            f"error: {field}: unknown metric 'eval_los'; did you mean 'eval_loss'?; valid: "
            + proc.stderr.split("valid: ")[1].strip()
        ]


def test_readers_of_a_sweep_whose_every_trial_failed_say_so_and_go_on(tmp_path, tiny_model_path):
    """An honest record with nothing to rank: every reader exits 0, says in a line what it
    cannot compute, and never prints a traceback or an empty table's repr."""
    from tests.conftest import run_cli, small_spec, write_spec

    spec = small_spec("all_bad", axes={"target_modules": [["no_such_module"], ["also_missing"]]})
    run = run_cli("run", str(write_spec(tmp_path / "all_bad.yaml", spec)), cwd=tmp_path)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    said = {}
    for args in (
        ["report", "all_bad"],
        ["report", "all_bad", "--html", str(tmp_path / "r.html")],
        ["export", "all_bad", "--history", "--out", str(tmp_path / "h.csv")],
        ["status", "all_bad"],
        ["compare", "all_bad", "all_bad"],
        ["evaluate", "all_bad"],
    ):
        proc = cli_in_process(*args, cwd=tmp_path)
        assert proc.returncode == 0 and "Traceback" not in proc.stdout + proc.stderr, (args, proc.stderr)
        assert "Index: []" not in proc.stdout and "Empty DataFrame" not in proc.stdout, args
        said[args[0]] = proc.stdout + proc.stderr
    assert "2 trial(s) did not finish" in said["report"]
    assert "0/2 finished" in said["status"] and "no_such_module" in said["status"]
    assert said["compare"].strip() == "all_bad has no finished trial to compare"
    assert said["evaluate"].strip() == "all_bad has no finished trial to evaluate"


def test_a_sweep_whose_points_all_end_equal_exits_0_and_says_so(tmp_path, tiny_model_path):
    """Four points that train identically (the swept logging interval changes no number), run
    with --retry-failed: exit 0, and the report says no axis mattered (it once ended the
    finished sweep with Optuna's RuntimeError, exit 1)."""
    from tests.conftest import run_cli, small_spec, write_spec

    spec = small_spec("all_equal", axes={"logging_steps": [1, 2, 3, 4]})
    spec["train"].update(max_steps=2, eval_steps=2)
    del spec["train"]["logging_steps"]
    path = write_spec(tmp_path / "all_equal.yaml", spec)
    again = run_cli("run", str(path), "--retry-failed", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Traceback" not in again.stdout + again.stderr
    assert re.search(r"what mattered: every finished trial has eval_rewards/accuracies = \S+: no axis", again.stdout)
