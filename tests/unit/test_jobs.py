"""The job launchers (`jobs/`): Ray Job submission, Slurm and KubeRay, run against stand-in
commands."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import yaml

from tests.conftest import (
    REPO,
    checkout_env,
)


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
    return {**checkout_env(), "PATH": f"{bin_dir}:{os.environ['PATH']}"}, calls


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
        [sys.executable, "-m", "sweep", "plan", *entry[4:]],
        cwd=REPO,
        env=checkout_env(),
        capture_output=True,
        text=True,
    )
    assert plan.returncode == 0, plan.stderr
    assert manifest["spec"]["runtimeEnvYAML"] and "MLFLOW_TRACKING_URI" in manifest["spec"]["runtimeEnvYAML"]
    assert manifest["spec"]["rayClusterSpec"]["rayVersion"] == version("ray")  # the version sweep is pinned to
    groups = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert any(
        "nvidia.com/gpu" in c["resources"]["limits"] for g in groups for c in g["template"]["spec"]["containers"]
    )
