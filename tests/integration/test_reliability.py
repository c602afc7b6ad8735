"""A sweep survives crashes, failing trials and bad input, and loses nothing (real processes)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sweep.record import logged_models
from tests.conftest import REPO, cli_in_process, mlflow_store, run_cli, small_spec, write_spec


def _start(spec_path, cwd):
    """`python -m sweep run` in its own process group, like a job under a shell or a scheduler."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "sweep", "run", str(spec_path), "--progress-interval", "2"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for(cwd, name, predicate, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.5)
        # Ray's folder appears after the store is initialised and the parent run exists
        # (opening a sqlite store while its schema is being created races the migration).
        if (cwd / "results" / name / "ray").exists():
            _, parents, children = mlflow_store(cwd, name)
            if predicate(children):
                return children
    raise AssertionError(f"timed out waiting on sweep {name}")


def _statuses(children):
    return sorted(r.info.status for r in children)


def test_killed_sweep_resumes_without_duplicates_and_a_changed_spec_needs_fresh(tmp_path, tiny_model_path):
    cwd = tmp_path
    spec = small_spec(
        "resumable", axes={"beta": [0.1, 0.2, 0.3]}, max_concurrent_trials=1, train={"max_steps": 30, "eval_steps": 15}
    )
    spec_path = write_spec(cwd / "resumable.yaml", spec)
    proc = _start(spec_path, cwd)
    try:
        # Kill the whole process group (driver, Ray, trials) once one trial finished and the next runs.
        before = _wait_for(cwd, "resumable", lambda ch: "FINISHED" in _statuses(ch) and "RUNNING" in _statuses(ch))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finished_before = {r.data.tags["sweep.trial_id"]: r.info.run_id for r in before if r.info.status == "FINISHED"}
    _, parents, children = mlflow_store(cwd, "resumable")
    assert "RUNNING" in _statuses(children)  # SIGKILL left no one to clean up: resume must
    left_behind = list(Path(tempfile.gettempdir()).glob(f"sweep-warm-{proc.pid}-*"))  # the warm workers' folder
    assert len(left_behind) == 1

    again = run_cli("run", str(spec_path), cwd=cwd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming sweep resumable" in again.stdout
    assert not left_behind[0].exists()  # the next run on this machine removed what the killed one left
    c, parents, children = mlflow_store(cwd, "resumable")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert "RUNNING" not in _statuses(children)
    finished = [r for r in children if r.info.status == "FINISHED"]
    # exactly one FINISHED run per point; the trials finished before the kill were not re-run
    assert sorted(r.data.params["sweep.beta"] for r in finished) == ["0.1", "0.2", "0.3"]
    for trial_id, run_id in finished_before.items():
        assert [r.info.run_id for r in finished if r.data.tags["sweep.trial_id"] == trial_id] == [run_id]
    # The interrupted attempt is marked KILLED on resume, or, where its Ray worker outlived
    # the SIGKILL long enough to finish it, is that point's one FINISHED run (not re-run).
    statuses = _statuses(children)
    assert set(statuses) <= {"FINISHED", "KILLED"} and len(children) == 3 + statuses.count("KILLED")

    # Running it once more re-runs nothing.
    third = run_cli("run", str(spec_path), cwd=cwd)
    assert third.returncode == 0, third.stderr[-2000:]
    assert len(mlflow_store(cwd, "resumable")[2]) == len(children)

    # A changed spec is refused (it would mix two experiments in one table) unless --fresh.
    spec["axes"]["beta"], spec["train"]["max_steps"], spec["train"]["eval_steps"] = [0.1], 6, 3
    changed = write_spec(cwd / "changed.yaml", spec)
    proc = run_cli("run", str(changed), cwd=cwd)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: spec: sweep 'resumable' already exists")
    assert "--fresh" in proc.stderr
    # --fresh: a new parent run with every point run again; the old sweep stays in MLflow
    proc = run_cli("run", str(changed), "--fresh", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    c, parents, after = mlflow_store(cwd, "resumable")
    assert len(parents) == 2 and {p.info.status for p in parents} == {"FINISHED"}
    newest = max(parents, key=lambda p: p.info.start_time)
    fresh_runs = [r for r in after if r.data.tags["mlflow.parentRunId"] == newest.info.run_id]
    assert [(r.info.status, r.data.metrics["global_step"]) for r in fresh_runs] == [("FINISHED", 6)]
    assert len(after) == len(children) + 1  # the first sweep's trials are kept beside it


def test_sigterm_stops_cleanly_and_marks_runs_killed(tmp_path, tiny_model_path):
    spec = small_spec(
        "terminated",
        axes={"beta": [0.1, 0.2, 0.3, 0.4]},
        max_concurrent_trials=1,
        train={"max_steps": 200, "eval_steps": 100},
    )
    proc = _start(write_spec(tmp_path / "t.yaml", spec), tmp_path)
    try:
        training = lambda ch: any(r.info.status == "RUNNING" and "loss" in r.data.metrics for r in ch)  # noqa: E731
        _wait_for(tmp_path, "terminated", training)
        proc.send_signal(signal.SIGTERM)  # as a scheduler ends a job: to the driver alone
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = proc.stdout.read()
    assert code == 130, out[-2000:] + proc.stderr.read()[-2000:]
    _, parents, children = mlflow_store(tmp_path, "terminated")
    assert parents[0].info.status == "KILLED"
    assert children and "RUNNING" not in _statuses(children)
    assert "run the same command again to resume" in out


def test_interrupted_halving_sweep_resumes_paused_trials_in_their_runs(tmp_path, tiny_model_path):
    """Stopped while some trials wait at a rung (paused, checkpointed) and others train: every
    unfinished run is KILLED as interrupted (not "stopped early"); run again, the paused trials
    go on from their checkpoints in the same MLflow runs and the halving completes."""
    spec = small_spec(
        "halving_resume",
        axes={"beta": [0.1, 0.5], "learning_rate": [5.0e-4, 1.0e-3]},
        train={"max_steps": 30, "eval_steps": 6},
        scheduler={"type": "halving", "grace_period": 1, "reduction_factor": 2},
    )
    del spec["train"]["learning_rate"]
    spec_path = write_spec(tmp_path / "h.yaml", spec)
    proc = _start(spec_path, tmp_path)
    try:
        paused = lambda ch: sum("sweep.stopped_early" in r.data.tags for r in ch) >= 2  # noqa: E731
        before = _wait_for(tmp_path, "halving_resume", paused)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: a terminal sends it to the whole process group
        assert proc.wait(timeout=120) == 130, proc.stdout.read()[-2000:] + proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    paused_ids = {r.data.tags["sweep.trial_id"]: r.info.run_id for r in before if "sweep.stopped_early" in r.data.tags}
    _, parents, children = mlflow_store(tmp_path, "halving_resume")
    assert parents[0].info.status == "KILLED"
    for r in children:
        assert r.info.status == "KILLED" and "sweep.stopped_early" not in r.data.tags, r.data.tags
        assert r.data.tags["sweep.error"] == "sweep interrupted"

    again = run_cli("run", str(spec_path), cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    c, parents, children = mlflow_store(tmp_path, "halving_resume")
    assert parents[0].info.status == "FINISHED"
    latest = {}
    for r in sorted(children, key=lambda r: r.info.start_time):
        latest[r.data.tags["sweep.trial_id"]] = r
    assert len(latest) == 4 and sorted(r.info.status for r in latest.values()) == [
        "FINISHED",
        "KILLED",
        "KILLED",
        "KILLED",
    ]
    assert all(r.info.status == "FINISHED" or r.data.tags.get("sweep.stopped_early") for r in latest.values())
    for trial_id, run_id in paused_ids.items():  # resumed in the run they paused in, from their checkpoint
        assert latest[trial_id].info.run_id == run_id
        steps = [m.step for m in c.get_metric_history(run_id, "eval_rewards/accuracies")]
        assert steps == sorted(set(steps)) and steps[0] == 6 and len(steps) >= 2, steps
    winner = next(r for r in latest.values() if r.info.status == "FINISHED")
    # (an eval logged after its checkpoint, before the interruption, is logged again after resuming)
    assert sorted({m.step for m in c.get_metric_history(winner.info.run_id, "eval_rewards/accuracies")}) == [
        6,
        12,
        18,
        24,
        30,
    ]


def test_nonfinite_trial_fails_fast_and_retries_are_counted_once(tmp_path, tiny_model_path):
    """discopop with tau=0 divides by zero: NaN gradients at the first step. The trial is FAILED
    with reason `non-finite loss` (retried once: max_failures=1), the other point finishes."""
    spec = small_spec(
        "diverging",
        axes={"discopop_tau": [0.05, 0.0]},
        train={"loss_type": "discopop", "max_steps": 8, "eval_steps": 4},
        max_failures=1,
        max_concurrent_trials=1,
    )
    proc = run_cli("run", str(write_spec(tmp_path / "d.yaml", spec)), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    _, _, children = mlflow_store(tmp_path, "diverging")
    bad = [r for r in children if r.data.params["sweep.discopop_tau"] == "0.0"]
    assert len(bad) == 2 and {r.info.status for r in bad} == {"FAILED"}  # first try + one retry
    for r in bad:
        assert r.data.tags["sweep.error"].startswith("non-finite loss: gradient of")
        assert r.data.metrics.get("global_step", 0) <= 1  # stopped at once, not after 8 steps
    good = [r for r in children if r.data.params["sweep.discopop_tau"] == "0.05"]
    assert [r.info.status for r in good] == ["FINISHED"]
    st = cli_in_process("status", "diverging", cwd=tmp_path).stdout
    assert "1/2 finished, 0 running, 0 pending, 1 failed" in st  # the retried point counts once


def test_secrets_never_reach_mlflow_logs_or_exports(grid_sweep, failing_sweep, sweeps_dir):
    """HF_TOKEN was set for every sweep of this session, and the grid sweep's spec holds tokens
    written out in nested credential fields (`train.model_init_kwargs`): no file under the results (the sqlite store,
    MLflow artifacts with the attached spec, Ray's folder, trial logs), no param or tag, no
    console output and no export contains them."""
    from tests.conftest import SECRET, SPEC_SECRETS

    exported = cli_in_process(
        "export", "grid", "--out", str(sweeps_dir / "secret_check.csv"), "--history", cwd=sweeps_dir
    )
    assert exported.returncode == 0
    c, parents, children = mlflow_store(sweeps_dir, "grid")
    spec_copy = Path(c.download_artifacts(parents[0].info.run_id, "spec/grid.yaml", str(sweeps_dir / "downloaded")))
    assert "<masked>" in spec_copy.read_text() and "revision: main" in spec_copy.read_text()  # the rest is kept
    records = [grid_sweep.stdout, grid_sweep.stderr, exported.stdout, exported.stderr]
    records += [json.dumps([run.data.params, run.data.tags]) for run in parents + children]
    written = [
        p for p in sweeps_dir.rglob("*") if p.is_file() and (p.parent != sweeps_dir or p.suffix == ".csv")
    ]  # not the specs
    for secret in (SECRET, *SPEC_SECRETS):
        assert not [r for r in records if secret in r], secret
        assert [p for p in written if secret.encode() in p.read_bytes()] == [], secret
    assert "warning: train.model_init_kwargs.token: a credential written in the spec (masked" in grid_sweep.stdout
    from sweep.record.tracking import flat_params

    params = flat_params(
        {"hub_token": "x", "api_key": "y", "beta": 0.1, "model_init_kwargs": {"token": "z", "dtype": "bf16"}}
    )
    assert params == {"beta": "0.1", "model_init_kwargs": "{'token': '<masked>', 'dtype': 'bf16'}"}


def _kill_when_training(log: Path, proc, after: int = 0) -> int:
    """SIGKILL, as the OOM killer would, the worker of the trial attempt logging to `log` once it
    trains: the attempt whose "(pid N)" header is number `after` (0: the first); returns N."""
    deadline = time.time() + 180
    while True:
        text = log.read_text() if log.exists() else ""
        pids = re.findall(r"\(pid (\d+)\)", text)
        if len(pids) > after and "'loss'" in text[text.index(f"(pid {pids[after]})") :]:
            os.kill(int(pids[after]), signal.SIGKILL)
            return int(pids[after])
        assert time.time() < deadline and proc.poll() is None, f"attempt {after + 1} never started training"
        time.sleep(0.2)


def test_a_killed_worker_is_a_failed_trial_with_its_cause(tmp_path, tiny_model_path):
    """The OOM killer (SIGKILL) ends one trial's Ray worker mid-training: its run is FAILED with
    the cause and Ray Tune retries it at once in a run of its own (max_failures: 1). Killed
    again, the point is FAILED for good; the other trial finishes and the sweep exits 1 (not
    130: nobody interrupted it). `run --retry-failed` then completes it: each attempt is its
    own run and each point ends with one FINISHED run."""

    from sweep.spec.points import point_id

    spec = small_spec(
        "worker_kill",
        axes={"max_steps": [120, 6]},
        max_failures=1,
        train={"eval_steps": 60, "logging_steps": 1},
    )
    del spec["train"]["max_steps"]
    path = write_spec(tmp_path / "kill.yaml", spec)
    log = tmp_path / "results" / "worker_kill" / "trials" / point_id({"max_steps": 120}) / "trial.log"
    proc = _start(path, tmp_path)
    try:
        first = _kill_when_training(log, proc)
        assert _kill_when_training(log, proc, after=1) != first  # the retry, in a worker of its own
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, out[-2000:] + err[-2000:]
    c, parents, children = mlflow_store(tmp_path, "worker_kill")
    assert parents[0].info.status == "FAILED"
    failed = [r for r in children if r.info.status == "FAILED"]
    assert [r.data.params["sweep.max_steps"] for r in failed] == ["120", "120"], out + err
    assert len({r.info.run_id for r in failed}) == 2  # the retry in a run of its own
    for r in failed:
        cause = r.data.tags["sweep.error"]
        assert re.fullmatch(r"worker process died \(pid \d+\): killed \(the OOM killer\?\) or crashed", cause)
    assert _statuses(children) == ["FAILED", "FAILED", "FINISHED"]
    failed_lines = [line for line in out.splitlines() if "FAILED max_steps=120" in line]
    assert 1 <= len(failed_lines) <= 2 and all(len(line) < 200 for line in failed_lines), failed_lines
    # Ray's long text (its OOM advice) is kept off the console, at the end of the trial's log
    assert "worker process has died" not in out + err and "Trial task failed" not in err, err[-3000:]
    assert "Ray's report of this failure:" in log.read_text() and "worker process has died" in log.read_text()

    again = run_cli("run", str(path), "--retry-failed", cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    c, parents, children = mlflow_store(tmp_path, "worker_kill")
    assert parents[0].info.status == "FINISHED"
    assert sorted(r.data.params["sweep.max_steps"] for r in children if r.info.status == "FINISHED") == ["120", "6"]
    assert _statuses(children) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]


@pytest.fixture
def small_disk(tmp_path):
    """`results/` on a tmpfs of its own (the store, the trials' adapters, the summary), as a
    results disk that can fill up. Mounting one needs root: elsewhere the test fails saying so,
    unless the person running it chose to skip it."""
    if os.geteuid() != 0:
        if os.environ.get("SWEEP_ALLOW_NO_ROOT") != "1":
            pytest.fail("the full-disk test mounts a tmpfs, which needs root; SWEEP_ALLOW_NO_ROOT=1 skips it")
        pytest.skip("not root, and SWEEP_ALLOW_NO_ROOT=1")
    disk = tmp_path / "results"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "--lazy", str(disk)], check=True)


def _fill(disk: Path) -> Path:
    """Write zeros until the disk refuses more: no byte left for anyone."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(bytes(1 << 16))
    with contextlib.suppress(OSError), open(disk / "filler.tail", "wb", buffering=0) as f:
        while True:
            f.write(b"\0")
    return filler


def test_a_full_results_disk_fails_the_sweep_in_one_line_and_a_rerun_completes(tmp_path, tiny_model_path, small_disk):
    """The results disk (the sqlite store on it) fills while two trials train: the sweep ends
    with one line saying so (exit 1, no traceback), the store stays readable and whole, and
    after space is freed `run --retry-failed` completes every point, adapters saved."""
    import sqlite3

    spec = small_spec(
        "disk_full", save="all", tracking={"retry_s": 5}, train={"max_steps": 24, "logging_steps": 1, "eval_steps": 24}
    )
    path = write_spec(tmp_path / "disk.yaml", spec)
    logs = small_disk / "disk_full" / "trials"
    proc = _start(path, tmp_path)
    try:
        deadline = time.time() + 180
        while sum("'loss'" in p.read_text() for p in logs.glob("*/trial.log")) < 2:
            assert time.time() < deadline and proc.poll() is None, "the trials never started training"
            time.sleep(0.2)
        filler = _fill(small_disk)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, out[-2000:] + err[-3000:]
    (line,) = err.strip().splitlines()  # one line on stderr: no traceback, no library's log of one
    # whichever write the full disk refused first: a file of the results or the store's
    assert re.fullmatch(
        r"error: (no space left on device writing \S+|the tracking store's disk is full \(database or disk is full\))"
        r": free space, then run the same command again",
        line,
    ), line
    # the trial that hit it first, FAILED in the live view with its cause: a file's write or the store's
    assert re.search(r"No space left on device|\(disk is full\)", out), out[-2000:]
    db = sqlite3.connect(f"file:{small_disk / 'mlflow.db'}?mode=ro", uri=True)
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()

    filler.unlink()
    (small_disk / "filler.tail").unlink()
    again = run_cli("run", str(path), "--retry-failed", cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    c, parents, children = mlflow_store(tmp_path, "disk_full")
    assert parents[0].info.status == "FINISHED"
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert sorted(r.data.params["sweep.beta"] for r in finished) == ["0.1", "0.5"]
    assert all(logged_models.adapter_of(c, r) is not None for r in finished)
    assert "RUNNING" not in _statuses(children)
