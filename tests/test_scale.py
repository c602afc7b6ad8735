"""Beyond one machine: an existing Ray head, a 2-node cluster, job launchers, and the MLflow UI
in a real browser."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from PIL import Image

from sweep.record.server import free_port

from .conftest import (
    NO_RAY,
    REPO,
    SweepServer,
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


def _env():
    return {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "PYTHONPATH": str(REPO)}


def _stubs(tmp_path: Path, **outputs: str) -> tuple[dict, Path]:
    """Commands on PATH that record their arguments (a JSON list per call, in calls.log) and
    print `outputs[name]`: the launchers run as they would on a cluster, against these."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name in ("ray", "srun", "scontrol", "sleep", "python"):
        stub = bin_dir / name
        stub.write_text(
            f"#!{sys.executable}\nimport json, sys\n"
            f"with open({str(calls)!r}, 'a') as f:\n    f.write(json.dumps([{name!r}, *sys.argv[1:]]) + '\\n')\n"
            f"print({outputs.get(name, '')!r}, end='')\n"
        )
        stub.chmod(0o755)
    return {**_env(), "PATH": f"{bin_dir}:{os.environ['PATH']}"}, calls


def _calls(log: Path) -> list[str]:
    return [shlex.join(json.loads(line)) for line in log.read_text().splitlines()]


def test_ray_job_launcher_submits_the_sweep_with_the_tracking_server_and_token(tmp_path):
    env, calls = _stubs(tmp_path)
    script = str(REPO / "jobs" / "ray_job_submit.sh")
    refused = subprocess.run([script, "search_spaces/beta_grid.yaml"], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "set MLFLOW_TRACKING_URI" in refused.stderr and not calls.exists()

    env.update(
        MLFLOW_TRACKING_URI="http://mlflow.internal:5000", HF_TOKEN="hf_launcher", RAY_ADDRESS="http://head:8265"
    )
    subprocess.run([script, "search_spaces/beta_grid.yaml"], env=env, check=True, cwd=REPO)
    (call,) = calls.read_text().splitlines()
    args = json.loads(call)
    assert args[:5] == ["ray", "job", "submit", "--address", "http://head:8265"]
    assert args[5] == "--runtime-env-json" and args[7:] == [
        "--",
        "python",
        "-m",
        "sweep",
        "run",
        "search_spaces/beta_grid.yaml",
    ]
    runtime_env = json.loads(args[6])
    assert runtime_env["working_dir"] == "." and {".venv", "results"} <= set(runtime_env["excludes"])
    assert runtime_env["env_vars"] == {"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000", "HF_TOKEN": "hf_launcher"}


def test_slurm_launcher_starts_ray_on_every_node_then_runs_the_sweep_on_it(tmp_path):
    env, calls = _stubs(tmp_path, scontrol="node1\nnode2\nnode3\n", srun="10.0.0.1 fe80::1")
    env.update(
        MLFLOW_TRACKING_URI="http://mlflow.internal:5000",
        SLURM_JOB_NODELIST="node[1-3]",
        SLURM_CPUS_PER_TASK="32",
        SLURM_GPUS_PER_NODE="8",
    )
    subprocess.run(["bash", str(REPO / "jobs" / "slurm_sweep.sh"), "spec.yaml"], env=env, check=True, cwd=tmp_path)
    lines = _calls(calls)
    resources = "--num-cpus=32 --num-gpus=8 --block"
    head = f"srun --nodes=1 --ntasks=1 -w node1 ray start --head --node-ip-address=10.0.0.1 --port=6379 {resources}"
    workers = [
        f"srun --nodes=1 --ntasks=1 -w {n} ray start --address=10.0.0.1:6379 {resources}" for n in ("node2", "node3")
    ]
    assert head in lines and all(w in lines for w in workers)
    # In the foreground (the nodes' `ray start` run in the background): the head's address, time
    # for the nodes to join, then the sweep on the cluster just started.
    foreground = [line for line in lines if " ray start " not in line]
    assert foreground == [
        "scontrol show hostnames 'node[1-3]'",
        "srun --nodes=1 --ntasks=1 -w node1 hostname --ip-address",
        "sleep 15",
        "sleep 15",
        "python -m sweep run spec.yaml --address 10.0.0.1:6379",
    ]
    assert len(lines) == len(foreground) + 3  # one `ray start` per node


def test_kuberay_manifest_runs_a_shipped_spec_on_gpu_workers():
    manifest = yaml.safe_load((REPO / "jobs" / "kuberay_rayjob.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    entry = manifest["spec"]["entrypoint"].split("#")[0].split()
    assert entry[:4] == ["python", "-m", "sweep", "run"]
    # the spec it launches is valid, as `plan` checks it offline
    plan = subprocess.run(
        [sys.executable, "-m", "sweep", "plan", *entry[4:]], cwd=REPO, env=_env(), capture_output=True, text=True
    )
    assert plan.returncode == 0, plan.stderr
    assert manifest["spec"]["runtimeEnvYAML"] and "MLFLOW_TRACKING_URI" in manifest["spec"]["runtimeEnvYAML"]
    assert manifest["spec"]["rayClusterSpec"]["rayVersion"] == version("ray")  # the version sweep is pinned to
    groups = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert any(
        "nvidia.com/gpu" in c["resources"]["limits"] for g in groups for c in g["template"]["spec"]["containers"]
    )


def _ray_start(*args: str, **env) -> None:
    proc = subprocess.run(
        [RAY, "start", "--disable-usage-stats", *args], env={**_env(), **env}, capture_output=True, text=True
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
    sweep = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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


def test_an_address_where_no_ray_answers_is_one_line_not_a_wait(tmp_path):
    """`run` told to join a cluster that is not there (Ray's own connect retries without end):
    exit 2 at once, one line naming where the address came from; nothing written."""
    path = write_spec(tmp_path / "s.yaml", small_spec("nowhere"))
    proc = run_cli("run", str(path), cwd=tmp_path, timeout=60)  # the fast tier's $RAY_ADDRESS: NO_RAY
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == (
        f"error: RAY_ADDRESS: no Ray cluster answers at {NO_RAY} (connection refused): start one with "
        "`ray start --head`, or leave --address and $RAY_ADDRESS unset for a local Ray"
    )
    proc = run_cli("run", str(path), "--address", "10.0.0.1", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: --address: '10.0.0.1' is not HOST:PORT")
    assert not (tmp_path / "results").exists()
