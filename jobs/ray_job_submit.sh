#!/usr/bin/env bash
# Submit a sweep to an existing Ray cluster as a Ray Job.
#
#   MLFLOW_TRACKING_URI=http://mlflow.internal:5000 jobs/ray_job_submit.sh search_spaces/beta_grid.yaml [DASHBOARD]
#
# DASHBOARD is the cluster's job server (default $RAY_ADDRESS, else http://127.0.0.1:8265).
# The repository is uploaded as the job's working directory (without .venv/ and results/);
# the cluster's image must already have the project's dependencies (pip install -e . there).
# Trials on other nodes must reach the tracking store: use an MLflow tracking server
# (`python -m sweep server --host 0.0.0.0` on a reachable machine), not a sqlite file.
set -euo pipefail
SPEC=${1:?usage: $0 SPEC [DASHBOARD_ADDRESS]}
ADDRESS=${2:-${RAY_ADDRESS:-http://127.0.0.1:8265}}
: "${MLFLOW_TRACKING_URI:?set MLFLOW_TRACKING_URI to a tracking server that every node can reach}"

RUNTIME_ENV=$(python3 - "$MLFLOW_TRACKING_URI" <<'PY'
import json, os, sys
env = {"MLFLOW_TRACKING_URI": sys.argv[1]}
if os.environ.get("HF_TOKEN"):  # gated models; passed to the job, never logged by sweep
    env["HF_TOKEN"] = os.environ["HF_TOKEN"]
print(json.dumps({"working_dir": ".", "excludes": [".venv", "results", ".git"], "env_vars": env}))
PY
)
exec ray job submit --address "$ADDRESS" --runtime-env-json "$RUNTIME_ENV" -- python -m sweep run "$SPEC"
