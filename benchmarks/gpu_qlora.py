"""QLoRA on a GPU: `sweep`'s trials against a plain TRL script, and packing. Run by hand where
there is a GPU (and no hub is needed):

    python benchmarks/gpu_qlora.py            # ~5 min on one H100; writes benchmarks/gpu_qlora.json

The model is Qwen2-0.5B's shape (24 layers, hidden 896, 14 heads / 2 KV heads, MLP 4864,
151,936-entry vocabulary, tied embeddings) with random weights and the embedded default's
tokenizer: step time does not care what the weights are. The data are synthetic pairs of
random text, ~256 prompt tokens and ~256 tokens per answer, so every batch is full-length.
Settings are the NeuralHermes recipe's where it has one: 4-bit nf4 base with bf16 compute
and double quantisation, LoRA r=16 / alpha 16 on all linear layers, lr 5e-5,
paged_adamw_32bit, activation checkpointing, max_length 1024; batch 8 pairs.

Runs, one at a time on the same GPU:
- plain: benchmarks/naive_dpo.py, a plain TRL DPOTrainer script (reference computed inline);
- sweep at `resources.gpu` 1, 0.5 and 0.25 (`--pack`): `python -m sweep run` over four
  points (beta 0.1/0.3/0.5/0.7), one, two or four trials at a time on the one GPU (at 1, later
  trials reuse the warm worker's base model; all share one reference pass).

Each trial reports seconds per optimizer step after the first, input tokens per second
(non-padding, counted by Trainer's `include_num_input_tokens_seen`) and torch's peak GPU
memory; each run the sweep's wall time, the training tokens of all its trials per second of
wall time, and the whole GPU's peak memory in use and mean utilisation (nvidia-smi).
`--shape tiny` runs the same on the embedded model (on CPU without quantisation: a smoke test).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from gpu_check import SHAPES, build_model, child_env, synthetic_pairs  # noqa: E402  (this folder is on sys.path when the script runs)

QWEN2_VOCAB = 151936

POINTS = {"beta": [0.1, 0.3, 0.5, 0.7]}  # the swept axis: four trials
LORA = {"r": 16, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": "all-linear"}
QUANTIZATION = {
    "load_in_4bit": True,
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_use_double_quant": True,
    "bnb_4bit_compute_dtype": "bfloat16",
}
COMPARED = ("eval_loss", "eval_rewards/margins", "eval_rewards/accuracies")  # final, held out


def train_settings(steps: int, batch: int, cuda: bool) -> dict:
    gpu = {"bf16": True, "optim": "paged_adamw_32bit", "activation_checkpointing": True}
    cpu = {"bf16": False, "use_cpu": True, "activation_checkpointing": False}
    return {
        "loss_type": "sigmoid",
        "beta": 0.1,
        "learning_rate": 5.0e-5,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 3,
        "max_steps": steps,
        "per_device_train_batch_size": batch,
        "per_device_eval_batch_size": batch,
        "max_length": 1024,
        "logging_steps": 5,
        "eval_strategy": "no",
        "save_strategy": "no",
        "seed": 42,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "include_num_input_tokens_seen": "non_padding",
        **(gpu if cuda else cpu),
    }


def build_data(model: Path, out: Path, train_rows: int, eval_rows: int, prompt_tokens: int, answer_tokens: int) -> Path:
    """Synthetic pairs (gpu_check.synthetic_pairs): train.jsonl/test.jsonl (for the plain script)
    and the same rows saved with `datasets` (for the sweep's `dataset.path`)."""
    import datasets

    if (out / "dataset_dict.json").exists():
        return out
    rows = synthetic_pairs(model, train_rows + eval_rows, prompt_tokens, answer_tokens)
    splits = {"train": rows[:train_rows], "test": rows[train_rows:]}
    out.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in split))
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(str(out))
    return out


class GpuMemoryWatch:
    """The whole GPU's peak memory in use (all processes) and its utilisation while any
    process holds more than 1 GiB (i.e. a model is loaded), sampled with nvidia-smi."""

    def __init__(self):
        self.peak_mib, self.busy, self._stop = 0, [], threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.is_set():
            try:
                query = ["nvidia-smi", "--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits"]
                used, busy = (
                    int(v) for v in subprocess.run(query, capture_output=True, text=True, timeout=10).stdout.split(",")
                )
                self.peak_mib = max(self.peak_mib, used)
                if used > 1024:
                    self.busy.append(busy)
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                return  # no nvidia-smi (CPU smoke test)
            self._stop.wait(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        mean = sum(self.busy) / len(self.busy) if self.busy else None
        return {"gpu_peak_used_gib": round(self.peak_mib / 1024, 2), "gpu_mean_utilisation_pct": mean and round(mean)}


def run_plain(work: Path, model: Path, data: Path, train: dict, quantization: dict | None) -> dict:
    from sweep.trial.configs import LORA_DEFAULTS

    config = {
        "train": {**train, "output_dir": str(work / "plain"), "report_to": []},
        "lora": {**LORA_DEFAULTS, **LORA},
        "max_eval_rows": 8,
        "quantization": quantization,
    }
    out = work / "plain.json"
    env = child_env()
    t0 = time.time()
    with GpuMemoryWatch() as gpu:
        proc = subprocess.run(
            [
                sys.executable,
                str(REPO / "benchmarks" / "naive_dpo.py"),
                "--model",
                str(model),
                "--data",
                str(data),
                "--config",
                json.dumps(config),
                "--out",
                str(out),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        raise SystemExit(f"plain TRL script failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return {**json.loads(out.read_text()), "wall_s": round(time.time() - t0, 1), **gpu.summary()}


def run_sweep(
    work: Path, name: str, model: Path, data: Path, train: dict, quantization: dict | None, gpu_per_trial: float
) -> dict:
    from mlflow.tracking import MlflowClient

    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)  # a fresh sweep, not a resumed one
    folder.mkdir(parents=True)
    spec = {
        "name": name,
        "model": str(model),
        "dataset": {"path": str(data), "max_eval_rows": 8},
        "axes": POINTS,
        "train": {k: v for k, v in train.items() if k not in POINTS},
        "lora": LORA,
        "quantization": quantization or "none",
        "resources": {"cpu": 2 if gpu_per_trial else 1, "gpu": gpu_per_trial},  # 0: the CPU smoke test
        "samples": {"prompts": 0},
        "save": "none",
    }
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    env = child_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.time()
    with GpuMemoryWatch() as gpu:
        proc = subprocess.run(
            [sys.executable, "-m", "sweep", "run", "spec.yaml"], cwd=folder, env=env, capture_output=True, text=True
        )
    wall = time.time() - t0
    logs = "".join(f"--- {p}\n{p.read_text()[-4000:]}" for p in sorted(folder.glob("results/*/trials/*/trial.log")))
    if proc.returncode != 0:
        raise SystemExit(f"sweep {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}\n{logs}")
    client = MlflowClient(f"sqlite:///{folder / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`sweep.kind` = 'trial'")
    trials = {r.data.params["sweep.beta"]: {**r.data.metrics, "status": r.info.status} for r in runs}
    tokens = sum(t.get("num_input_tokens_seen", 0) for t in trials.values())
    return {
        "gpu_per_trial": gpu_per_trial,
        "wall_s": round(wall, 1),
        "training_tokens_per_wall_s": round(tokens / wall),
        **gpu.summary(),
        "base_model_reused": logs.count("base model: reused from this worker's previous trial"),
        "all_finished": all(t["status"] == "FINISHED" for t in trials.values()),
        "trials": {k: per_trial(t) for k, t in trials.items()},
        "trials_raw": trials,
    }


def per_trial(m: dict) -> dict:
    keys = (
        "time/step_s",
        "time/tokens_per_s",
        "gpu/peak_allocated_gib",
        "gpu/peak_reserved_gib",
        "time/reference_computed_s",
        "time/setup_s",
    )
    return {k: round(m[k], 3) for k in keys if k in m}


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=SHAPES, default="qwen2-0.5b")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument(
        "--pack", type=float, nargs="*", default=[1, 0.5, 0.25], help="resources.gpu of each sweep (none: plain only)"
    )
    p.add_argument("--quantization", choices=["nf4", "none"], default="nf4", help="none: bf16 LoRA, for comparison")
    p.add_argument("--batch", type=int, default=8, help="preference pairs per step")
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--answer-tokens", type=int, default=256)
    p.add_argument("--work", type=Path, default=REPO / "results" / "gpu-bench")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "gpu_qlora.json")
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    a.work.mkdir(parents=True, exist_ok=True)
    model = build_model(a.shape, a.work / f"model-{a.shape}", vocab_size=QWEN2_VOCAB if a.shape != "tiny" else None)
    data = build_data(
        model,
        a.work / f"data-{a.prompt_tokens}-{a.answer_tokens}",
        a.steps * a.batch + a.batch,
        8,
        a.prompt_tokens,
        a.answer_tokens,
    )
    train = train_settings(a.steps, a.batch, cuda)
    quantization = QUANTIZATION if cuda and a.quantization == "nf4" else None
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"{a.shape} on {device}: {a.steps} steps x {a.batch} pairs, work dir {a.work}", flush=True)

    plain = run_plain(a.work, model, data, train, quantization)
    print(f"plain TRL: {per_trial(plain)}", flush=True)
    sweeps = {}
    for fraction in a.pack:
        sweeps[fraction] = run = run_sweep(
            a.work, f"gpu{fraction}".replace(".", "_"), model, data, train, quantization, fraction if cuda else 0
        )
        print(f"sweep gpu {fraction}: {json.dumps({k: v for k, v in run.items() if k != 'trials_raw'})}", flush=True)

    if not sweeps:  # plain only
        result = {"device": device, "shape": a.shape, "quantization": quantization, "plain_trl": plain}
        a.out.write_text(json.dumps(result, indent=2) + "\n")
        return
    first = sweeps[a.pack[0]]
    same_point = first["trials_raw"][str(train["beta"])]  # the plain script's point
    result = {
        "device": device,
        "torch": torch.__version__,
        "shape": a.shape,
        "shape_config": SHAPES[a.shape],
        "steps": a.steps,
        "pairs_per_step": a.batch,
        "prompt_tokens": a.prompt_tokens,
        "answer_tokens": a.answer_tokens,
        "train": train,
        "lora": LORA,
        "quantization": quantization,
        "plain_trl": {
            **per_trial(plain),
            **{k: plain[k] for k in ("wall_s", "gpu_peak_used_gib", "gpu_mean_utilisation_pct")},
        },
        "sweep_trial_same_point": per_trial(same_point),
        "step_time_ratio_plain_over_sweep": round(plain["time/step_s"] / same_point["time/step_s"], 2),
        "final_metrics_abs_diff_plain_vs_sweep": {m: abs(plain[m] - same_point[m]) for m in COMPARED},
        "sweeps": {str(k): {kk: vv for kk, vv in v.items() if kk != "trials_raw"} for k, v in sweeps.items()},
    }
    print(json.dumps(result, indent=2))
    a.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
