"""Shared fixtures. Everything is real: the builtin model is built once per test session into
a private cache, sweeps run real Ray and MLflow in subprocesses, trials run real TRL training."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SECRET = "hf_TESTSECRETdoNotLeak0123456789"
# Written into the grid sweep's spec, as one passes a token for a gated model: stored nowhere.
SPEC_SECRETS = ("hf_SPECtokenNEVERstored0123456789", "sk-nestedAPIkeyNEVERstored987654")


@pytest.fixture(scope="session", autouse=True)
def sweep_env(tmp_path_factory):
    """A private model cache for the whole session (shared by its xdist workers), offline.
    SWEEP_TEST_CACHE names one to keep between sessions instead (a developer's loop)."""
    cache = Path(os.environ.get("SWEEP_TEST_CACHE") or _session_root(tmp_path_factory) / "sweep-cache")
    cache.mkdir(exist_ok=True)
    os.environ["SWEEP_CACHE"] = str(cache)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["HF_TOKEN"] = SECRET  # present in every sweep of the session: must never be stored
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("RAY_ADDRESS", None)
    # Tests stop what they start with SIGINT, as a person's Ctrl-C. A test run started in the
    # background of a script (`cmd &`) begins with SIGINT ignored, which every child process
    # would inherit; a handler here is reset to the default in each child instead.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return cache


def _session_root(tmp_path_factory) -> Path:
    """This test session's temporary folder; under pytest-xdist, the one all workers share."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(autouse=True)
def environment_restored():
    """Whatever a test (or code it runs in-process, e.g. `main([...])`) sets in os.environ
    ends with it: no later test inherits RAY_AUTH_MODE, MLFLOW_TRACKING_URI or the like."""
    before = dict(os.environ)
    yield
    if os.environ != before:
        os.environ.clear()
        os.environ.update(before)


NO_RAY = "127.0.0.1:1"  # a port where nothing listens


@pytest.fixture(autouse=True)
def fast_tier_starts_no_ray(request, monkeypatch):
    """The fast tier starts no Ray (a local one costs ~30 CPU-s): its tests point $RAY_ADDRESS
    at a port where nothing listens, so one that reaches Ray fails in one line instead."""
    if request.node.get_closest_marker("integration") is None:
        monkeypatch.setenv("RAY_ADDRESS", NO_RAY)


@pytest.fixture(scope="session")
def tiny_model_path(sweep_env):
    """The embedded model, built once per session: the first worker builds, the others wait."""
    from filelock import FileLock

    from sweep.builtin import builtin_model_path

    with FileLock(str(sweep_env / "build.lock")):
        return builtin_model_path("tiny", log=lambda *_: None)


def small_spec(name: str, **overrides) -> dict:
    """A fast spec on the embedded default: few steps, small eval split."""
    spec = {
        "name": name,
        "model": "builtin:tiny",
        "dataset": {"path": "builtin:prefs", "max_train_rows": 400, "max_eval_rows": 64},
        "axes": {"beta": [0.1, 0.5]},
        "train": {
            "learning_rate": 5.0e-4,
            "max_steps": 12,
            "per_device_train_batch_size": 8,
            "per_device_eval_batch_size": 32,
            "logging_steps": 2,
            "eval_strategy": "steps",
            "eval_steps": 6,
            "max_length": 128,
        },
        "resources": {"cpu": 1},
        "samples": {"prompts": 0},  # generations and adapters are tested where they matter (test_results)
        "save": "none",
    }
    for key, value in overrides.items():
        if key != "axes" and isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_cli(*args: str, cwd: Path, timeout: int = 600, python_flags=()) -> subprocess.CompletedProcess:
    """`python -m sweep ...` in a fresh process, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # each test names its store
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "sweep", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def imported_modules(stderr: str) -> set[str]:
    """The modules a process run with `python -X importtime` imported, from its stderr."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def cli_in_process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m sweep ...` as `sweep.cli.main` in this process, for the commands that only read
    the store (report, export, compare, list, status, logs): the same exit code and output, without a fresh
    interpreter's ~3 s of CPU importing MLflow and pandas."""
    import contextlib
    import io

    from sweep.cli import main

    out, err, before = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(["sweep", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def sweeps_dir(tmp_path_factory):
    """One working directory (so one MLflow store, results/mlflow.db) shared by the session's sweeps."""
    return tmp_path_factory.mktemp("sweeps")


@pytest.fixture(scope="session")
def grid_sweep(sweeps_dir, tiny_model_path):
    """A real 2 x 2 sweep (loss_type x beta), run once per session with `python -m sweep run`."""
    spec = small_spec("grid", axes={"loss_type": ["sigmoid", "ipo"], "beta": [0.1, 0.5]})
    spec["train"]["model_init_kwargs"] = {
        "token": SPEC_SECRETS[0],
        "extra": {"api_key": SPEC_SECRETS[1], "revision": "main"},
    }
    return run_cli("run", str(write_spec(sweeps_dir / "grid.yaml", spec)), "--progress-interval", "5", cwd=sweeps_dir)


@pytest.fixture(scope="session")
def failing_sweep(sweeps_dir, tiny_model_path):
    """A sweep where one point fails at run time: LoRA on a module the model does not have."""
    spec = small_spec(
        "partly_bad", axes={"target_modules": ["all-linear", ["no_such_module"]]}, max_concurrent_trials=1
    )
    return run_cli("run", str(write_spec(sweeps_dir / "partly_bad.yaml", spec)), cwd=sweeps_dir)


class SweepServer:
    """`python -m sweep server` on `store` (default: sqlite in `results_dir`), on one port
    for its whole life: `stop()` (or `crash()`) and `start()` again is an outage the trials
    must survive."""

    def __init__(self, results_dir: Path, store: str | None = None):
        from sweep.record.server import free_port

        self.port = free_port()
        self.results_dir, self.store, self.proc = results_dir, store, None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> SweepServer:
        cmd = [
            sys.executable,
            "-m",
            "sweep",
            "server",
            "--port",
            str(self.port),
            "--results-dir",
            str(self.results_dir),
        ]
        cmd += ["--backend-store-uri", self.store] if self.store else []
        env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "PYTHONPATH": str(REPO)}
        self.results_dir.mkdir(parents=True, exist_ok=True)
        log = self.results_dir / "server.log"  # a file, not a pipe nobody reads once it is up
        with open(log, "a") as err:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True
            )
        line = self.proc.stdout.readline().strip()
        assert line == f"MLFLOW_TRACKING_URI={self.uri}", line + log.read_text()[-2000:]
        return self

    def listening(self) -> set[tuple[str, int]]:
        """(address, port) of every socket the server's processes listen on."""
        import psutil

        root = psutil.Process(self.proc.pid)
        return {
            (c.laddr.ip, c.laddr.port)
            for p in (root, *root.children(recursive=True))
            for c in p.net_connections("inet")
            if c.status == psutil.CONN_LISTEN
        }

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(timeout=30) == 0

    def crash(self) -> None:
        """Down at once, as a killed machine: a graceful stop serves its open connections for
        a while (seconds, under load), long enough for short trials to end their runs."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def chromium(p):
    """Debian's chromium, headless, driven by Playwright; a missing browser fails the test
    unless the person running the tests says so."""
    if not shutil.which("chromium"):
        if os.environ.get("SWEEP_ALLOW_NO_BROWSER") != "1":
            pytest.fail(
                "Debian's chromium is not installed (the README's set-up: sudo apt-get install chromium); "
                "set SWEEP_ALLOW_NO_BROWSER=1 to skip the browser tests where they cannot run"
            )
        pytest.skip("no chromium, and SWEEP_ALLOW_NO_BROWSER=1")
    return p.chromium.launch(
        executable_path=shutil.which("chromium"),
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    )


# MLflow opens its assistant panel over a third of the page on a browser's first visit to a local
# server (a person closes it once); a fresh headless profile is always on its first visit.
ASSISTANT_SEEN = "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true')"


def ui_page(browser, height: int = 1000):
    """A page 1600 pixels wide in a browser that has seen MLflow's assistant panel once."""
    context = browser.new_context(viewport={"width": 1600, "height": height})
    context.add_init_script(ASSISTANT_SEEN)
    return context.new_page()


def runs_table(page) -> list[dict[str, str]]:
    """MLflow's runs table as shown, top row first: each row's cells by column id (MLflow's
    `metrics.`key``, `params.`key``, `attributes.`Dataset``), and `name`, the run's name."""
    rows: dict[int, dict[str, str]] = {}
    for row in page.query_selector_all(".ag-row"):  # a row's pinned and scrolled parts share its index
        cells = rows.setdefault(int(row.get_attribute("row-index")), {})
        for cell in row.query_selector_all(".ag-cell"):
            cells[cell.get_attribute("col-id")] = cell.inner_text().strip()
    for cells in rows.values():
        cells["name"] = cells.get("attributes.`Run Name`", "").splitlines()[-1]  # after its colour chip
    return [rows[i] for i in sorted(rows)]


@contextlib.contextmanager
def sweep_ui(cwd: Path, name: str):
    """`python -m sweep ui NAME` in `cwd`: yields (the process, {page: URL}) with the runs URL it
    prints on stdout and the judged answers' and Models tab's on stderr (`urls["said"]`: every
    line of stderr up to them); stops it with Ctrl-C."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "sweep", "ui", name]
    ui = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        urls = {"runs": ui.stdout.readline().strip(), "said": ""}
        for line in iter(ui.stderr.readline, ""):
            urls["said"] += line
            label, _, url = line.strip().partition(": ")
            urls[label] = url
            if label == "models":
                break
        yield ui, urls
    finally:
        ui.send_signal(signal.SIGINT)
        ui.wait(timeout=30)


def landing_rows(page, url: str, children, metric: str, axes) -> list[dict[str, str]]:
    """Open `url` (what `sweep ui` prints) with no click and check what it shows: the trials (not
    their parent), best first by `metric`, each row's metric and swept values those of its run,
    the metric, the swept values and the Dataset column in view. Returns the rows."""
    page.goto(url)
    for run in children:
        page.get_by_text(run.info.run_name, exact=True).wait_for(timeout=60_000)
    time.sleep(1)  # the cells' values follow the rows
    rows = runs_table(page)
    width = page.viewport_size["width"]
    in_view = {
        e.get_attribute("col-id")
        for e in page.query_selector_all(".ag-header-cell")
        if (box := e.bounding_box()) and box["x"] + box["width"] <= width
    }
    column = f"metrics.`{metric}`"
    swept = [f"params.`sweep.{axis}`" for axis in axes]
    assert {column, *swept, "attributes.`Dataset`"} <= in_view, in_view
    by_name = {r.info.run_name: r for r in children}
    assert sorted(row["name"] for row in rows) == sorted(by_name)
    shown = [float(row[column]) for row in rows]
    assert shown == sorted(shown, reverse=True)  # best first
    for row in rows:
        run = by_name[row["name"]]
        assert float(row[column]) == pytest.approx(run.data.metrics[metric])
        assert all(row[p] == run.data.params[p[len("params.`") : -1]] for p in swept)
        assert "builtin:prefs train" in row["attributes.`Dataset`"]
    return rows


def mlflow_store(cwd: Path, name: str):
    """(client, parent runs, trial runs) of the sweep `name` in cwd's results/mlflow.db."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'results' / 'mlflow.db'}")
    exp = c.get_experiment_by_name(name)
    runs = c.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("sweep.kind") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep.kind") == "trial"]
    return c, parents, children


# ---- helpers shared by a unit and an integration test file --------------------------------


def write_jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def checkout_env() -> dict[str, str]:
    """This process's environment with this checkout importable and no tracking URI set."""
    return {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "PYTHONPATH": str(REPO)}


def probe(code: str, cwd, *args: str) -> subprocess.CompletedProcess:
    """`code` run in a fresh Python process (its own Ray) with this checkout importable."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )


# loss_type -> the family (TRL trainer) that trains it, one of each
FAMILIES = {"sigmoid": "dpo", "ipo": "dpo", "kto": "kto", "simpo": "cpo", "cpo": "cpo", "orpo": "orpo"}


@pytest.fixture
def cuda_reported(monkeypatch):
    """torch says a CUDA GPU is here (with native bf16: `cuda_reported.bf16 = False` for a T4).
    The stack is imported first: bitsandbytes binds CUDA kernels as it loads when it sees a GPU."""
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import torch
    import trl  # noqa: F401

    class Reported:
        bf16 = True

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)  # TrainingArguments picks cuda:0
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: Reported.bf16)
    return Reported


# Tests in two tiers, by folder: tests/unit is the fast loop (pure functions and in-process
# checks: no Ray, no MLflow store, no training; under a minute on 2 cores), tests/integration
# builds the embedded model and runs real sweeps (marked `integration` here, so `-m integration`
# and `-m "not integration"` pick them). A unit test asking for one of these fixtures (they build
# or run something) is refused at collection: it belongs in tests/integration.
INTEGRATION_FIXTURES = {
    "tiny_model_path",
    "grid_sweep",
    "failing_sweep",
    "sweeps_dir",
    "exported",
    "seeded",
    "seeded_report",
    "reward_model",
    "ray_head",
    "two_node_cluster",
    "tracking_server",
}


# Every test has a time limit (pytest-timeout): one that hangs fails with its stack instead of
# holding CI for its 90 minutes. The integration tier's covers the session sweeps that the first
# test using them runs in its set-up; a test may set its own with @pytest.mark.timeout(S).
TIME_LIMITS_S = {"fast": 120, "integration": 900}


# Under pytest-xdist (`-n 2 --dist loadgroup`, pyproject.toml's default) the tests
# that share a sweep run on one worker, so each shared sweep is run once.
XDIST_GROUPS = {
    "grid": {"grid_sweep", "failing_sweep", "sweeps_dir", "exported"},
    "seeded": {"seeded", "seeded_report"},
    "reward": {"reward_model"},
    "flaky": {"flaky_tracker"},
}


# tryfirst: pytest-xdist's worker reads the xdist_group marks in its own modifyitems hook,
# which otherwise runs before this one (a conftest loaded at start-up is called after it),
# and the shared sweeps would run once per worker.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        tier = item.path.relative_to(REPO / "tests").parts[0]
        if tier == "integration":
            item.add_marker(pytest.mark.integration)
        elif tier != "unit":
            raise pytest.UsageError(f"{item.nodeid}: a test lives in tests/unit or tests/integration")
        elif INTEGRATION_FIXTURES & fixtures:
            used = ", ".join(sorted(INTEGRATION_FIXTURES & fixtures))
            raise pytest.UsageError(f"{item.nodeid} uses {used}: an integration test, move it to tests/integration")
        if item.get_closest_marker("timeout") is None:
            tier = "integration" if item.get_closest_marker("integration") else "fast"
            item.add_marker(pytest.mark.timeout(TIME_LIMITS_S[tier]))
        for group, shared in XDIST_GROUPS.items():
            if shared & fixtures:
                item.add_marker(pytest.mark.xdist_group(group))
                break
    # The integration tier first (in pytest-randomly's order), the fast tests last: a worker takes
    # new tests while it holds two, so whatever comes last is where one worker waits for the other;
    # tests of seconds there, not a sweep of minutes.
    items.sort(key=lambda item: item.get_closest_marker("integration") is None)


def pytest_collection_finish(session):
    """Under `--dist loadgroup`, pytest-xdist tags each grouped test's id with its group in every
    worker; a test left untagged runs wherever, and each worker runs the shared sweeps itself:
    twice the time, silently. Refuse to start instead."""
    if not getattr(session.config.option, "loadgroup", False):  # set in xdist's workers only
        return
    untagged = [i.nodeid for i in session.items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
    if untagged:
        raise pytest.UsageError(f"pytest-xdist did not tag {untagged[0]} with its xdist group (pytest version?)")
