"""Tracking under stress: a tracker that refuses or drops writes for a while, a PostgreSQL-backed
`sweep server` under a real sweep, and a server stopped mid-sweep."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from sweep.record import tracking
from sweep.spec.load import parse_spec
from sweep.trial.run import TrialContext, run_trial
from tests.conftest import REPO, SweepServer, run_cli, small_spec, write_spec
from tests.postgres import local_postgres

LOG_BATCH = "/api/2.0/mlflow/runs/log-batch"


# What an overloaded MLflow store answers (SQLAlchemy's pool in front of sqlite): a 400 that
# MLflow's HTTP client does not retry.
POOL_TIMEOUT = {
    "error_code": "BAD_REQUEST",
    "message": "(sqlalchemy.exc.TimeoutError) QueuePool limit of size 5 overflow 10 reached, "
    "connection timed out, timeout 30.00",
}


class FlakyProxy(http.server.ThreadingHTTPServer):
    """Forwards to an MLflow server; while `failing()`, every metrics write (log-batch with
    metrics; params and the rest pass) gets,
    in turn, a 503, the store's pool time-out, or its connection dropped with no answer."""

    daemon_threads = True

    def __init__(self, upstream_port: int):
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream_port = upstream_port
        self.fail_from: float | None = None  # set at the first metrics write
        self.fail_for = 0.0
        self.faults = {"503": 0, "pool": 0, "drop": 0}
        self.uri = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def failing(self) -> bool:
        if self.fail_from is None:
            self.fail_from = time.time()
        return time.time() - self.fail_from < self.fail_for


class _Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _forward(self):
        body = self._body()
        proxy: FlakyProxy = self.server
        if self.path.startswith(LOG_BATCH) and json.loads(body).get("metrics") and proxy.failing():
            kind = min(proxy.faults, key=proxy.faults.get)  # each kind in turn
            proxy.faults[kind] += 1
            if kind == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            status, payload = (503, {"error_code": "TEMPORARILY_UNAVAILABLE"}) if kind == "503" else (400, POOL_TIMEOUT)
            return self._answer(status, json.dumps(payload).encode(), "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
        skip = ("host", "connection", "transfer-encoding", "content-length")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        conn.request(self.command, self.path, body=body or None, headers=headers)
        answer = conn.getresponse()
        self._answer(answer.status, answer.read(), answer.getheader("Content-Type", "application/json"))
        conn.close()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":  # artifact uploads are chunked
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        self.rfile.readline()
        return b"".join(chunks)

    def _answer(self, status: int, data: bytes, content_type: str):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward


@pytest.fixture(scope="session")
def flaky_tracker(tmp_path_factory):
    server = SweepServer(tmp_path_factory.mktemp("flaky-server")).start()
    proxy = FlakyProxy(server.port)
    yield proxy
    proxy.shutdown()
    server.stop()


def _trial_through(proxy: FlakyProxy, tmp_path: Path, tiny_model_path, name: str, **spec_overrides):
    """One real trial (no Ray) logging every step through `proxy`: (its run, its final metrics)."""
    train = {"max_steps": 24, "logging_steps": 1, "eval_steps": 12}
    spec = parse_spec(small_spec(name, results_dir=str(tmp_path), train=train, **spec_overrides))
    experiment = tracking.ensure_experiment(proxy.uri, name, None)
    parent = tracking.start_parent_run(proxy.uri, experiment, spec)
    ctx = TrialContext(
        spec, str(tiny_model_path), proxy.uri, experiment, parent, str(tmp_path / "trials"), log_to_file=True
    )
    metrics = run_trial(ctx, {"beta": 0.1})
    (run,) = tracking.trial_runs(tracking.SweepRun(proxy.uri, experiment, parent))
    return run, metrics


def test_a_tracker_refusing_and_dropping_writes_neither_fails_the_trial_nor_loses_a_point(
    flaky_tracker, tmp_path, tiny_model_path
):
    flaky_tracker.fail_from, flaky_tracker.fail_for = None, 8.0  # 8 s of failures from the first metrics write
    run, metrics = _trial_through(flaky_tracker, tmp_path, tiny_model_path, "flaky")
    assert run.info.status == "FINISHED"
    c = tracking.client(flaky_tracker.uri)
    for key in ("loss", "rewards/margins", "grad_norm", "logps/chosen"):
        history = c.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == list(range(1, 25)), key  # each step once: none lost, none twice
    assert all(n >= 2 for n in flaky_tracker.faults.values()), flaky_tracker.faults  # every fault kind was met
    assert [m.step for m in c.get_metric_history(run.info.run_id, "eval_rewards/accuracies")] == [12, 24]
    assert c.get_run(run.info.run_id).data.metrics["loss"] == metrics["loss"]
    assert tracking.TAG_METRICS_DROPPED not in run.data.tags


def test_points_the_tracker_never_takes_are_dropped_after_retry_s_and_the_trial_says_so(
    flaky_tracker, tmp_path, tiny_model_path
):
    flaky_tracker.fail_from, flaky_tracker.fail_for = None, 3600.0  # metrics writes refused for good
    try:
        run, _ = _trial_through(flaky_tracker, tmp_path, tiny_model_path, "refused", tracking={"retry_s": 3})
    finally:
        flaky_tracker.fail_for = 0.0
    assert run.info.status == "FINISHED"  # a tracking fault is not the trial's failure
    dropped = int(run.data.tags[tracking.TAG_METRICS_DROPPED])
    assert dropped > 24 * 5  # every step's loss, rewards, logps... (all were refused)
    trial_log = tracking.client(flaky_tracker.uri).download_artifacts(
        run.info.run_id, tracking.TRIAL_LOG, str(tmp_path)
    )
    log = Path(trial_log).read_text()
    assert f"{dropped} metric point(s) could not be sent to the tracking server within 3 s" in log, log[-2000:]


def test_many_runs_histories_are_read_in_a_few_requests_and_equal_one_call_each(flaky_tracker, tmp_path, monkeypatch):
    """`compat.mlflow_internals.metric_histories`, what `export --history` and `report` read: from a
    sqlite store and from a tracking server (its answers cut at their limit and asked again in
    halves), the same points as one `get_metric_history` per run and metric, without those calls;
    with another MLflow version, those calls."""
    from mlflow.entities import Metric

    from sweep import compat
    from sweep.compat import mlflow_internals

    flaky_tracker.fail_for = 0.0
    monkeypatch.setattr(mlflow_internals, "POINTS_PER_ANSWER", 10)
    for uri in (f"sqlite:///{tmp_path / 'm.db'}", flaky_tracker.uri):
        c = tracking.client(uri)
        experiment = c.create_experiment(f"bulk_{uuid.uuid4().hex[:8]}")
        runs = []
        for i in range(5):
            run_id = c.create_run(experiment).info.run_id
            losses = [Metric("loss", 1.0 / step + i, 1000 + step, step) for step in range(1, 8)]
            c.log_batch(run_id, metrics=[*losses, Metric("eval_loss", 0.5 + i, 2000, 7)] if i else losses)
            runs.append(run_id)
        keys = ["loss", "eval_loss", "never_logged"]
        one_each = {(r, k): [(m.step, m.value) for m in c.get_metric_history(r, k)] for r in runs for k in keys}
        expected = {pair: points for pair, points in one_each.items() if points}
        calls = []
        monkeypatch.setattr(c, "get_metric_history", lambda *a: calls.append(a) or [])
        bulk = mlflow_internals.metric_histories(c, runs, keys)
        assert {pair: [(m.step, m.value) for m in ms] for pair, ms in bulk.items()} == expected and calls == [], uri
        monkeypatch.undo()
        monkeypatch.setattr(mlflow_internals, "POINTS_PER_ANSWER", 10)
    monkeypatch.setitem(compat.WRITTEN_FOR, "mlflow", "0.0")  # another version: one call per run and metric
    fallback = mlflow_internals.metric_histories(c, runs, keys)
    assert {pair: [(m.step, m.value) for m in ms] for pair, ms in fallback.items()} == expected


def test_a_sweeps_runs_read_with_only_the_fields_asked_are_those_of_a_search(tmp_path):
    """`compat.mlflow_internals.child_runs`, what `status` and the report read: from a SQL store,
    each child run's status, name and the asked metrics (NaN included), tags and params (a name
    ending in "." for all it begins), as a search returns them; None for another store."""
    from mlflow.entities import Metric, Param

    from sweep.compat import mlflow_internals

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    c = tracking.client(uri)
    experiment = c.create_experiment("light")
    parent = c.create_run(experiment).info.run_id
    c.create_run(experiment)  # another sweep's run: not a child
    for i, status in enumerate(["FINISHED", "FAILED", "RUNNING"]):
        run_id = c.create_run(
            experiment, run_name=f"t{i}", tags={"mlflow.parentRunId": parent, "sweep.error": f"e{i}"}
        ).info.run_id
        params = [Param("sweep.beta", str(0.1 * (i + 1))), Param("sweep.seed", str(i)), Param("train.lr", "0.1")]
        c.log_batch(
            run_id,
            metrics=[Metric("loss", [1.0, float("nan"), 0.5][i], 0, 3), Metric("other", 1.0, 0, 3)],
            params=params,
        )
        if status != "RUNNING":
            c.set_terminated(run_id, status)
    light = mlflow_internals.child_runs(
        c, experiment, parent, metrics=["loss"], tags=["sweep.error"], params=["sweep."]
    )
    whole = tracking.trial_runs(tracking.SweepRun(uri, experiment, parent))

    def keep(values, names):
        return {k: v for k, v in values.items() if k in names or any(k.startswith(n) for n in names if n.endswith("."))}

    def seen(run, metrics, tags, params):
        info, data = run.info, run.data
        picked = (keep(data.metrics, metrics), keep(data.tags, tags), keep(data.params, params))
        return (info.run_id, info.run_name, info.status, str(picked[0]), *picked[1:])

    asked = (["loss"], ["sweep.error"], ["sweep."])
    assert [seen(r, *asked) for r in light] == [seen(r, *asked) for r in whole] and len(light) == 3
    assert all(set(r.data.params) == {"sweep.beta", "sweep.seed"} and set(r.data.metrics) == {"loss"} for r in light)
    assert [set(r.data.metrics) for r in mlflow_internals.child_runs(c, experiment, parent, metrics=None)] == [
        {"loss", "other"}
    ] * 3
    assert mlflow_internals.child_runs(tracking.client("http://127.0.0.1:1"), experiment, parent) is None


@pytest.fixture(scope="session")
def postgres_uri():
    """A PostgreSQL database for the tests: $SWEEP_TEST_POSTGRES_URI, else a server of this
    session's own from the `pgserver` wheel's binaries (tests/postgres.py), stopped at its end."""
    uri = os.environ.get("SWEEP_TEST_POSTGRES_URI")
    if uri:
        yield uri
        return
    with local_postgres() as uri:
        yield uri


def test_a_sweep_through_a_postgres_backed_server_down_15_s_loses_nothing(tmp_path, tiny_model_path, postgres_uri):
    """4 trials at once, every step logged, into `sweep server` on PostgreSQL; the server
    is killed while trials are logging (requests in flight cut off) and started again on the
    same port 15 s later.
    `save: best` keeps exactly one adapter, the best trial's, on disk and in MLflow."""
    server = SweepServer(tmp_path / "server", postgres_uri).start()
    name = f"pg_{uuid.uuid4().hex[:8]}"  # a database of $SWEEP_TEST_POSTGRES_URI outlives the test
    spec = small_spec(
        name,
        axes={"beta": [0.05, 0.1, 0.3, 0.9]},
        resources={"cpu": 0.5},
        save="best",
        tracking={"uri": server.uri},
        # ~0.05 CPU-s a step: long enough that the last trial to start still trains when the
        # server goes down (at 12 steps all four could end before the poll saw them logging)
        train={"max_steps": 60, "logging_steps": 1, "eval_steps": 30},
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "sweep", "run", str(write_spec(tmp_path / "pg.yaml", spec))]
    sweep = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        c = tracking.client(server.uri)
        deadline = time.time() + 300
        # all four logging before the outage: a trial still starting would open its run after it
        while len(_logging_trials(c, name)) < 4 and time.time() < deadline and sweep.poll() is None:
            time.sleep(0.2)
        assert len(_logging_trials(c, name)) == 4, "the four trials never all logged"
        server.crash()
        outage = (time.time(), time.time() + 15)
        time.sleep(15)
        server.start()
        out, err = sweep.communicate(timeout=600)
        assert sweep.returncode == 0, err[-3000:]
        exp = c.get_experiment_by_name(name)
        children = [r for r in c.search_runs([exp.experiment_id]) if r.data.tags.get("sweep.kind") == "trial"]
        assert sorted(r.info.status for r in children) == ["FINISHED"] * 4
        spans = sorted((r.info.start_time / 1000, r.info.end_time / 1000) for r in children)
        assert any(s < outage[0] and e > outage[1] for s, e in spans), (outage, spans)  # a trial ran through it
        assert max(sum(s < e2 and s2 < e for s2, e2 in spans) for s, e in spans) >= 4  # 4 at a time (itself included)
        for run in children:
            for key in ("loss", "rewards/margins", "logps/chosen", "grad_norm"):
                assert sorted(m.step for m in c.get_metric_history(run.info.run_id, key)) == list(range(1, 61)), key
            assert [m.step for m in c.get_metric_history(run.info.run_id, "eval_rewards/accuracies")] == [30, 60]
            assert tracking.TAG_METRICS_DROPPED not in run.data.tags
        best = pd.read_csv(tmp_path / "results" / name / "summary.csv").iloc[0]
        adapters = [p.parent.name for p in (tmp_path / "results" / name / "trials").glob("*/adapter")]
        assert adapters == [best["trial_id"]]
        # In MLflow, one logged model: the best trial's adapter, with the metric it was ranked by.
        (model,) = c.search_logged_models([exp.experiment_id])
        assert model.source_run_id == best["run_id"] and model.model_type == "LoRA adapter"
        metric = "eval_rewards/accuracies"  # the default ranking metric
        assert {m.key: m.value for m in model.metrics}[metric] == pytest.approx(best[metric])
        assert not any(a.path == "adapter" for r in children for a in c.list_artifacts(r.info.run_id))
    finally:
        if sweep.poll() is None:
            sweep.kill()
        server.stop()


def _trial_runs(c, name: str) -> list:
    exp = c.get_experiment_by_name(name)
    if exp is None:
        return []
    return c.search_runs([exp.experiment_id], filter_string="tags.`sweep.kind` = 'trial'")


def _logging_trials(c, name: str) -> list:
    return [r for r in _trial_runs(c, name) if "loss" in r.data.metrics]


def test_a_server_down_longer_than_the_retries_fails_the_trials_with_one_clear_line(tmp_path, tiny_model_path):
    """The server goes away while two trials train and stays away past their `retry_s` and the
    HTTP client's retries: each trial fails with "tracking server unreachable" in one line (no
    hang, no MLflow traceback on the console). The driver waits up to `retry_s` for the store
    at the end; back by then, it records both runs FAILED with that cause and exits 1.
    `sweep server` without --host listens on loopback only."""
    server = SweepServer(tmp_path / "server").start()
    assert server.listening() == {("127.0.0.1", server.port)}
    spec = small_spec(
        "unreachable",
        tracking={"uri": server.uri, "retry_s": 8},
        # Trials train on through the outage (metrics wait in memory) and fail when they cannot
        # record their end: the server stops once both runs are open, long before either can end.
        train={"max_steps": 40, "logging_steps": 1, "eval_steps": 40},
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "sweep", "run", str(write_spec(tmp_path / "u.yaml", spec))]
    sweep = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    logs = list((tmp_path / "results" / "unreachable" / "trials").glob("*/trial.log"))
    try:
        c = tracking.client(server.uri)
        deadline = time.time() + 300
        while len(_trial_runs(c, "unreachable")) < 2 and time.time() < deadline and sweep.poll() is None:
            time.sleep(0.2)
        assert [r.info.status for r in _trial_runs(c, "unreachable")] == ["RUNNING"] * 2, "the trials never started"
        server.stop()
        while time.time() < deadline and sweep.poll() is None:  # until both trials gave up on the store
            logs = list((tmp_path / "results" / "unreachable" / "trials").glob("*/trial.log"))
            if sum("tracking server unreachable" in p.read_text() for p in logs) == 2:
                break
            time.sleep(0.5)
        server.start()
        out, err = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    try:
        assert sweep.returncode == 1, out[-2000:] + err[-3000:]
        children = [r for r in c.search_runs([c.get_experiment_by_name("unreachable").experiment_id])]
        trials = [r for r in children if r.data.tags.get("sweep.kind") == "trial"]
        assert sorted(r.info.status for r in trials) == ["FAILED", "FAILED"]
        for r in trials:  # the end, or (stopped as a run was being opened) the start could not be recorded
            error = r.data.tags["sweep.error"]
            assert error.startswith(f"tracking server unreachable at {server.uri}: the trial's "), error
            assert error.endswith("was not recorded (Connection refused)") or "could not be opened" in error, error
        failed = [line for line in (out + err).splitlines() if "FAILED" in line and "beta=" in line]
        assert len(failed) == 2 and all(len(line) < 200 for line in failed), out
        assert "Traceback" not in out + err and "MlflowException" not in out + err, err[-3000:]
    finally:
        server.stop()


def test_an_authenticated_server_refuses_strangers_and_takes_a_sweep(tmp_path, tiny_model_path, monkeypatch):
    """`sweep server --host 0.0.0.0` with credentials runs MLflow's basic authentication: a
    client without them is refused, a sweep whose trials send them (MLflow's own variables)
    logs through it, and the password is in no file the server or the sweep wrote. From
    another folder, `report` and `export` read the sweep there by $MLFLOW_TRACKING_URI and by
    --tracking-uri."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from sweep.record.server import free_port

    password = "pw-" + uuid.uuid4().hex
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "sweeper")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    port = free_port("0.0.0.0")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    server = subprocess.Popen(
        [sys.executable, "-m", "sweep", "server", "--host", "0.0.0.0", "--port", str(port)]
        + ["--results-dir", str(tmp_path / "server")],
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert server.stdout.readline().strip() == f"MLFLOW_TRACKING_URI=http://{socket.gethostname()}:{port}"
        uri = f"http://127.0.0.1:{port}"
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
        with pytest.raises(MlflowException, match="401|nauthori|ermission"):
            MlflowClient(uri).search_experiments()
        # The sweep sends the password in its tracking URI, and its spec holds a token written
        # out, one by reference and one given with --set: none of them is stored anywhere.
        literal, referenced, overridden = (f"{kind}-{uuid.uuid4().hex}" for kind in ("lit", "ref", "set"))
        monkeypatch.setenv("SWEEP_TEST_REFERENCED", referenced)
        kwargs = {"token": literal, "extra": {"api_key": "${env:SWEEP_TEST_REFERENCED}"}}
        spec = small_spec(
            "behind_auth",
            axes={"beta": [0.1]},
            tracking={"uri": f"http://sweeper:{password}@127.0.0.1:{port}"},
            train={"model_init_kwargs": kwargs},
        )
        proc = run_cli(
            "run",
            str(write_spec(tmp_path / "s.yaml", spec)),
            "--set",
            f"train.model_init_kwargs.extra.password={overridden}",
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        (exp,) = [e for e in MlflowClient(uri).search_experiments() if e.name == "behind_auth"]
        runs = MlflowClient(uri).search_runs([exp.experiment_id])
        assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]  # the parent and its trial
        for run in runs:  # every artifact of both runs: the attached spec, trial_config.json, trial.log
            MlflowClient(uri).download_artifacts(run.info.run_id, "", str(tmp_path / "downloaded" / run.info.run_id))
        # Read from another folder (no local results): the store named by $MLFLOW_TRACKING_URI or --tracking-uri.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": uri}
        by_env = subprocess.run(
            [sys.executable, "-m", "sweep", "report", "behind_auth", "--format", "json"],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert by_env.returncode == 0, by_env.stderr[-2000:]
        assert len(json.loads(by_env.stdout)["trials"]) == 1
        by_flag = run_cli(
            "export", "behind_auth", "--tracking-uri", uri, "--out", str(elsewhere / "t.csv"), cwd=elsewhere
        )
        assert by_flag.returncode == 0, by_flag.stderr[-2000:]
        assert list(pd.read_csv(elsewhere / "t.csv")["beta"]) == [0.1]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    records = [proc.stdout, proc.stderr, by_env.stdout, by_env.stderr]
    records += [json.dumps([r.data.params, r.data.tags]) for r in runs]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "s.yaml"]  # results, ray/, the server's
    assert any(p.suffix == ".pkl" for p in written)  # Ray Tune's pickled state is among them
    assert len(list((tmp_path / "downloaded").rglob("*"))) > 3
    for secret in (password, literal, referenced, overridden):
        assert [r for r in records if secret in r] == [], secret
        assert [p for p in written if secret.encode() in p.read_bytes()] == [], secret
