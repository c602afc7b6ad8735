#!/usr/bin/env bash
# Run a sweep on SLURM: start a Ray cluster across the allocated nodes, then run the sweep on it.
#
#   MLFLOW_TRACKING_URI=http://mlflow.internal:5000 sbatch jobs/slurm_sweep.sh search_spaces/beta_grid.yaml
#
# One Ray node per SLURM node; each node offers its GPUs to Ray, and `sweep` places one trial
# per GPU (or per `resources.gpu` fraction). Trials on every node must reach the same tracking
# server and the same results directory (the job's working directory on a shared filesystem).
#SBATCH --job-name=sweep
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=sweep-%j.log
set -euo pipefail
SPEC=${1:?usage: sbatch $0 SPEC}
: "${MLFLOW_TRACKING_URI:?set MLFLOW_TRACKING_URI to a tracking server that every node can reach}"
export MLFLOW_TRACKING_URI

mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
HEAD=${NODES[0]}
HEAD_IP=$(srun --nodes=1 --ntasks=1 -w "$HEAD" hostname --ip-address | awk '{print $1}')
PORT=6379

srun --nodes=1 --ntasks=1 -w "$HEAD" \
  ray start --head --node-ip-address="$HEAD_IP" --port=$PORT \
  --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="${SLURM_GPUS_PER_NODE:-0}" --block &
sleep 15
for node in "${NODES[@]:1}"; do
  srun --nodes=1 --ntasks=1 -w "$node" \
    ray start --address="$HEAD_IP:$PORT" \
    --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="${SLURM_GPUS_PER_NODE:-0}" --block &
done
sleep 15

python -m sweep run "$SPEC" --address "$HEAD_IP:$PORT"
