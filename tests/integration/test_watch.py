"""A sweep you can watch: status lines on a non-terminal, `status` and `logs` during and after a sweep."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from tests.conftest import REPO, cli_in_process, mlflow_store, small_spec, write_spec

STATUS_LINE = re.compile(
    r"^\[(\d+s|\d+m\d\ds)\] (\d+)/4 finished, (\d+) running, (\d+) pending, (\d+) failed, (\d+) stopped early"
)


def test_plain_progress_lines_without_escape_codes(grid_sweep):
    out = grid_sweep.stdout
    assert "\x1b" not in out and "\x1b" not in grid_sweep.stderr  # captured output: no terminal codes
    lines = [line for line in out.splitlines() if STATUS_LINE.match(line)]
    assert len(lines) >= 2, out
    first, last = STATUS_LINE.match(lines[0]), STATUS_LINE.match(lines[-1])
    assert first.group(2) == "0" and int(first.group(4)) + int(first.group(3)) == 4
    assert last.groups()[1:] == ("4", "0", "0", "0", "0") and lines[-1].endswith("ETA 0s")
    assert "| best eval_rewards/accuracies=" in lines[-1]
    # one line per trial as it ends, with its metric and duration
    event = re.compile(r"^\[\d/4\] finished loss_type=\w+,beta=0\.\d: eval_rewards/accuracies=0\.\d+ \(\d+s\)$")
    events = [line for line in out.splitlines() if event.match(line)]
    assert len(events) == 4
    # the trials' own chatter (Trainer log dicts, warnings) stays out of the console
    assert "'loss':" not in out and "Loading weights" not in out


def test_failed_trial_is_announced_and_its_log_kept(failing_sweep, sweeps_dir):
    assert re.search(r"^\[\d/2\] FAILED target_modules=no_such_module: .*no_such_module", failing_sweep.stdout, re.M)
    proc = cli_in_process("logs", "partly_bad", "target_modules=no_such_module", cwd=sweeps_dir)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" in proc.stdout and "no_such_module" in proc.stdout
    proc = cli_in_process("status", "partly_bad", cwd=sweeps_dir)
    assert "1/2 finished, 0 running, 0 pending, 1 failed, 0 killed" in proc.stdout
    assert "failed: target_modules=no_such_module:" in proc.stdout


def test_status_and_logs_during_and_after_a_running_sweep(tmp_path, tiny_model_path):
    # trials long enough (~10 s each here) that a `status` call (~2.5 s) lands inside one
    spec = small_spec("watched", axes={"beta": [0.1]}, train={"max_steps": 300, "eval_steps": 150, "logging_steps": 2})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sweep = subprocess.Popen(
        [sys.executable, "-m", "sweep", "run", str(write_spec(tmp_path / "w.yaml", spec))],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen_running, seen_log = None, None
        deadline = time.time() + 240
        while time.time() < deadline and sweep.poll() is None and not (seen_running and seen_log):
            time.sleep(0.5)
            if not (tmp_path / "results" / "watched" / "ray").exists():  # store initialised, parent run exists
                continue
            # (the store says first whether the trial trains yet: then `status` must show it)
            if not any(
                r.info.status == "RUNNING" and "loss" in r.data.metrics for r in mlflow_store(tmp_path, "watched")[2]
            ):
                continue
            st = cli_in_process("status", "watched", cwd=tmp_path)
            m = re.search(r"^\s*(beta=0\.\d)\s+(\d+)/300\b", st.stdout, re.M)
            if st.returncode == 0 and m and int(m.group(2)) > 0:
                assert "sweep watched: RUNNING" in st.stdout
                assert "0/1 finished, 1 running, 0 pending" in st.stdout
                seen_running = m.group(1)
                log = cli_in_process("logs", "watched", seen_running, cwd=tmp_path)
                if log.returncode == 0 and "'loss':" in log.stdout:
                    seen_log = log.stdout
        assert seen_running, "never saw a running trial with progress"
        assert seen_log and seen_log.startswith("trial ")
        assert sweep.wait(timeout=300) == 0, sweep.stderr.read()[-2000:]
    finally:
        if sweep.poll() is None:
            sweep.kill()
    st = cli_in_process("status", "watched", cwd=tmp_path)
    assert "sweep watched: FINISHED" in st.stdout and "1/1 finished, 0 running, 0 pending" in st.stdout
    assert "best eval_rewards/accuracies=" in st.stdout
    after = cli_in_process("logs", "watched", seen_running, cwd=tmp_path).stdout
    assert after.startswith(seen_log[:200]) and "train_runtime" in after  # the uploaded artifact is complete
    c, _, children = mlflow_store(tmp_path, "watched")
    assert all("trial.log" in [a.path for a in c.list_artifacts(r.info.run_id)] for r in children)
