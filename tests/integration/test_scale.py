"""Beyond one machine: an existing Ray head, a 2-node cluster, job launchers, and the MLflow UI
in a real browser."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from PIL import Image

from sweep.record.server import free_port
from tests.conftest import (
    SweepServer,
    checkout_env,
    chromium,
    cli_in_process,
    landing_rows,
    mlflow_store,
    run_cli,
    small_spec,
    sweep_ui,
    ui_page,
    write_spec,
)

RAY = str(Path(sys.executable).parent / "ray")


def _ray_start(*args: str, **env) -> None:
    proc = subprocess.run(
        [RAY, "start", "--disable-usage-stats", *args], env={**checkout_env(), **env}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@contextlib.contextmanager
def _ray_cluster_dir():
    """A temp dir of its own for a Ray cluster a test starts, and on the way out the end of
    exactly that cluster's processes: those naming the dir on their command line (GCS, raylets,
    monitors) and their children (workers, agents). Not `ray stop`, which stops every Ray
    on the machine, a cluster someone started before the tests included. Short: Ray's
    socket paths under it must fit in 107 characters."""
    import psutil

    temp_dir = tempfile.mkdtemp(prefix="sweep-ray-", dir="/tmp")
    try:
        yield temp_dir
    finally:
        procs = [p for p in psutil.process_iter(["cmdline"]) if temp_dir in " ".join(p.info["cmdline"] or [])]
        procs += [child for p in procs for child in _children(p)]
        for p in procs:  # SIGKILL, as a forced `ray stop` would: nothing in a test cluster to save
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(procs, timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _children(proc) -> list:
    import psutil

    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


@pytest.fixture
def ray_head():
    """A Ray head started by hand, as on a machine where Ray already runs."""
    port = free_port()
    with _ray_cluster_dir() as temp_dir:
        _ray_start("--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp_dir}")
        yield f"127.0.0.1:{port}"


@pytest.fixture
def two_node_cluster():
    """Two Ray nodes (a head and a worker, 1 CPU each) on this machine: real multi-node scheduling.

    Not ray.cluster_utils.Cluster: with Ray 2.60 its actors died before running ("cancelled
    before it started running") when the driver was a separate process, as `sweep run` is."""
    port = free_port()
    with _ray_cluster_dir() as temp_dir:
        _ray_start("--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false", f"--temp-dir={temp_dir}")
        # the head turned token auth on; a node joining an explicit address must ask for it
        _ray_start(f"--address=127.0.0.1:{port}", "--num-cpus=1", RAY_AUTH_MODE="token")
        yield f"127.0.0.1:{port}"


def test_sweep_runs_on_a_separately_started_ray_head(tmp_path, tiny_model_path, ray_head):
    spec = small_spec("on_head", axes={"beta": [0.1, 0.5]}, max_concurrent_trials=1)
    proc = run_cli("run", str(write_spec(tmp_path / "s.yaml", spec)), "--address", ray_head, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, parents, children = mlflow_store(tmp_path, "on_head")
    assert sorted(r.info.status for r in children) == ["FINISHED", "FINISHED"]
    assert all("/" in r.data.params["trial.node"] for r in children)  # ran as Ray tasks on that head


@pytest.fixture
def tracking_server(tmp_path):
    server = SweepServer(tmp_path / "server").start()
    yield server.uri
    server.stop()


def test_two_node_cluster_needs_a_server_uses_both_nodes_and_survives_losing_one(
    tmp_path, tiny_model_path, two_node_cluster, tracking_server
):
    """A node-local store is refused; with a server, one trial runs on each node. The worker
    node is then lost mid-training (its raylet and its workers SIGKILLed): that attempt
    is FAILED with "lost contact with the trial's worker", `max_failures: 1` retries it on the head, and
    the sweep finishes with one FINISHED run per point (exit 0)."""
    import psutil

    spec = small_spec("two_nodes", axes={"beta": [0.1, 0.5]})
    # A node-local sqlite store is refused before anything is written.
    proc = run_cli("run", str(write_spec(tmp_path / "local.yaml", spec)), "--address", two_node_cluster, cwd=tmp_path)
    assert proc.returncode == 2
    assert re.search(r"^error: tracking\.uri: this Ray cluster has 2 nodes", proc.stderr, re.M), (
        proc.stdout + proc.stderr[:3000]
    )
    assert not (tmp_path / "results" / "mlflow.db").exists()

    spec.update(tracking={"uri": tracking_server}, max_failures=1)
    # long enough that the trial seen training on the worker node is still training when it goes
    # (at 40 steps, under CI's load, its first metrics once arrived as it finished)
    spec["train"].update(max_steps=120, logging_steps=1, eval_steps=120)
    cmd = [
        sys.executable,
        "-m",
        "sweep",
        "run",
        str(write_spec(tmp_path / "server.yaml", spec)),
        "--address",
        two_node_cluster,
    ]
    sweep = subprocess.Popen(
        cmd, cwd=tmp_path, env=checkout_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=tracking_server)
    port = two_node_cluster.rsplit(":", 1)[1]
    (raylet,) = [p for p in psutil.process_iter(["cmdline"]) if _worker_node_raylet(p.info["cmdline"] or [], port)]
    worker_node = re.search(r"--node_id=(\w+)", " ".join(raylet.info["cmdline"])).group(1)
    try:
        deadline, on_worker = time.time() + 300, []
        while not on_worker and time.time() < deadline and sweep.poll() is None:
            exp = c.get_experiment_by_name("two_nodes")
            runs = c.search_runs([exp.experiment_id], "tags.`sweep.kind` = 'trial'") if exp else []
            on_worker = [
                r
                for r in runs
                if worker_node.startswith(r.data.params.get("trial.node", "/?").split("/")[1]) and r.data.metrics
            ]
            time.sleep(0.2)
        assert on_worker, "no trial trained on the worker node"
        for p in [raylet, *_children(raylet)]:  # the machine gone: its raylet and every process under it
            with contextlib.suppress(psutil.Error):
                p.kill()
        out, err = sweep.communicate(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, out[-2000:] + err[-3000:]
    exp = c.get_experiment_by_name("two_nodes")
    children = [r for r in c.search_runs([exp.experiment_id]) if r.data.tags.get("sweep.kind") == "trial"]
    by_status = sorted((r.info.status, r.data.params["sweep.beta"]) for r in children)
    lost = on_worker[0].data.params["sweep.beta"]
    assert by_status == sorted([("FINISHED", "0.1"), ("FINISHED", "0.5"), ("FAILED", lost)]), by_status
    (failed,) = [r for r in children if r.info.status == "FAILED"]
    assert failed.info.run_id == on_worker[0].info.run_id
    assert failed.data.tags["sweep.error"] == "lost contact with the trial's worker: its process or its node went away"
    nodes = {r.data.params["trial.node"].split("/")[1] for r in children}
    assert len(nodes) == 2, nodes  # the first attempts ran one on each node (1 CPU each)
    retried = [r for r in children if r.info.status == "FINISHED" and r.data.params["sweep.beta"] == lost]
    assert not worker_node.startswith(retried[0].data.params["trial.node"].split("/")[1])  # the retry: on the head
    # artifacts went through the server
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert all(
        {"trial.log", "trial_config.json"} <= {a.path for a in c.list_artifacts(r.info.run_id)} for r in finished
    )
    lines = [ln for ln in out.splitlines() if "FAILED" in ln and "beta=" in ln]
    assert len(lines) == 1 and "lost contact" in lines[0] and len(lines[0]) < 200, out


def _worker_node_raylet(cmdline: list[str], gcs_port: str) -> bool:
    """The raylet of the cluster's node that is not its head (the head's has Ray's head resource)."""
    line = " ".join(cmdline)
    return (
        "raylet/raylet" in line
        and re.search(rf"--gcs-address=\S+:{gcs_port}\b", line) is not None
        and "__internal_head__" not in line
    )


def test_report_html_is_one_page_a_browser_renders_offline(grid_sweep, sweeps_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "mailed" / "grid.html"
    proc = cli_in_process("report", "grid", "--html", str(page_file), cwd=sweeps_dir)
    assert proc.returncode == 0, proc.stderr
    text = page_file.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text  # nothing to fetch
    c, parents, children = mlflow_store(sweeps_dir, "grid")
    attached = [a.path for a in c.list_artifacts(parents[0].info.run_id, "report")]
    assert "report/grid.html" in attached
    with sync_playwright() as p:
        browser = chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.route(
            "**/*",
            lambda route: route.abort() if not route.request.url.startswith(("file:", "data:")) else route.continue_(),
        )
        page.goto(page_file.as_uri())
        headings = page.locator("h2").all_inner_texts()
        for wanted in ("trials", "best trial per loss type", "what mattered", "figures"):
            assert wanted in headings, headings
        trial_rows = page.locator("table").first.locator("tbody tr")
        assert trial_rows.count() == len(children) == 4
        images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth])")
        assert sorted(alt for alt, _ in images) == [
            "eval_rewards_accuracies_vs_beta",
            "parallel_coordinates",
            "training_curves",
        ]
        assert all(width >= 600 for _, width in images), images  # decoded, not broken
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    img = Image.open(shot).convert("L")
    assert img.height > 2000 and len(set(img.getdata())) > 50  # tables and figures drawn, not a blank page


def test_sweep_ui_lands_on_the_trials_ranked_in_a_real_browser(grid_sweep, sweeps_dir):
    """`sweep ui NAME` prints one URL (MLflow's notices only with --verbose); opened with no
    click, it shows the sweep's trials (not one collapsed parent row), best first, the ranking
    metric and the swept values in view, the Dataset column naming the data. Ctrl-C stops the
    server with it."""
    from playwright.sync_api import sync_playwright

    with sweep_ui(sweeps_dir, "grid") as (ui, urls):
        m = re.fullmatch(
            r"http://127\.0\.0\.1:(\d+)/#/experiments/(\d+)/runs\?workflowType=machine_learning&viewStateShareKey=\S+",
            urls["runs"],
        )
        assert m, urls
        _, parents, children = mlflow_store(sweeps_dir, "grid")
        with sync_playwright() as p:
            browser = chromium(p)
            page = ui_page(browser)
            rows = landing_rows(page, urls["runs"], children, "eval_rewards/accuracies", ["loss_type", "beta"])
            browser.close()
        assert parents[0].info.run_name not in {row["name"] for row in rows}
    assert ui.returncode == 0
    said = urls["said"] + ui.stderr.read()
    assert "Warning" not in said and "[MLflow]" not in said, said  # no server notices without --verbose
    with socket.socket() as s:  # the server is gone with it
        assert s.connect_ex(("127.0.0.1", int(m.group(1)))) != 0
