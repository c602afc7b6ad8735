"""The GPU check in one command: what `quantization: auto` means on CUDA (4-bit nf4 QLoRA, bf16
compute and training), through every loss family, with no internet and no model hub.

    python benchmarks/gpu_check.py            # on one GPU: writes benchmarks/gpu_check.json
    python benchmarks/gpu_check.py --smoke    # the same path on CPU with the GPU configuration (CI)

Sized to fit ten minutes on one GPU (not yet timed on one); `--smoke` takes ~75 s on 2 cores.

It builds random-weight models of real shapes locally (a Qwen2-0.5B-shape policy and a small
one-label reward model, both with the embedded default's tokenizer: step time does not care
what the weights are) and synthetic preference pairs, then runs, as a user would:

1. `sweep run`: one trial per loss family (sigmoid, ipo, kto, simpo, cpo, orpo), two trials
   per GPU (`resources.gpu: 0.5`), so later trials reuse a warm worker's base model across
   families; evaluations during training, the judge at each (the reward model, a function
   and the builtin verifiable scorer), sample answers, every adapter saved;
2. `sweep evaluate`: every trial's held-out metrics recomputed from its saved adapter;
3. `sweep promote`: the best adapter merged into its base and saved.

It prints one table (per trial: status, s/step, tokens/s, peak GPU memory, base model reused,
reference log-probs reused, judge seconds) and writes it with the commands' outcomes as JSON.
`--smoke` runs the same on the CPU with the tiny shape and the GPU configuration spelled out
(`auto` means full precision on a CPU): 4-bit nf4 with bf16 compute, bf16 training.
How to carry the stack to a GPU machine without internet: scripts/gpu_carry.sh, docs/gpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LOSS_TYPES = ["sigmoid", "ipo", "kto", "simpo", "cpo", "orpo"]  # the four trainers, six losses
SHAPES = {  # transformers Qwen2Config fields
    "qwen2-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    ),
}
REWARD_SHAPE = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4)
# What `auto` builds on CUDA (sweep.trial.model.quantization_config with bf16 training), spelled out
# for the CPU smoke run; tests/{unit/trial,integration}/test_gpu_shaped.py checks the two agree.
GPU_CONFIGURATION = {
    "quantization": {
        "mode": "4bit",
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": "bfloat16",
    },
    "train": {"bf16": True},
}
SCORERS_MODULE = """def brevity(prompts, completions, **kwargs):
    return [1.0 / (1 + len(c[0]["content"].split())) for c in completions]
"""


def build_model(shape: str, out: Path, vocab_size: int | None = None) -> Path:
    """A random-init causal LM of `shape` with the embedded default's tokenizer, saved in bf16
    (`vocab_size`: the shape's real vocabulary, e.g. Qwen2's 151,936; default the tokenizer's)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from sweep.builtin import builtin_model_path

    if (out / "config.json").exists():
        return out
    tokenizer = AutoTokenizer.from_pretrained(builtin_model_path("tiny", log=lambda *_: None))
    torch.manual_seed(0)
    config = Qwen2Config(**SHAPES[shape], vocab_size=vocab_size or len(tokenizer), **_special_ids(tokenizer))
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_reward_model(policy: Path, out: Path) -> Path:
    """A small random-init one-label sequence classifier with the policy's tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForSequenceClassification

    if (out / "config.json").exists():
        return out
    tokenizer = AutoTokenizer.from_pretrained(policy)
    torch.manual_seed(1)
    config = Qwen2Config(**REWARD_SHAPE, num_key_value_heads=2, vocab_size=len(tokenizer), num_labels=1)
    config.update(_special_ids(tokenizer))
    Qwen2ForSequenceClassification(config).to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _special_ids(tokenizer) -> dict:
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def synthetic_pairs(model: Path, rows: int, prompt_tokens: int, answer_tokens: int) -> list[dict]:
    """Conversational pairs of random text from the model's vocabulary: every batch full-length."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    rng = random.Random(0)
    first = len(tokenizer.all_special_ids)

    def text(n: int) -> str:
        return tokenizer.decode([rng.randrange(first, len(tokenizer)) for _ in range(n)])

    return [
        {
            "prompt": [{"role": "user", "content": text(prompt_tokens)}],
            "chosen": [{"role": "assistant", "content": text(answer_tokens)}],
            "rejected": [{"role": "assistant", "content": text(answer_tokens)}],
            "answer": text(2),  # for builtin:verifiable
        }
        for _ in range(rows)
    ]


def build_data(model: Path, out: Path, rows: int, prompt_tokens: int, answer_tokens: int) -> Path:
    """`synthetic_pairs` in one .jsonl file (a layout `sweep` reads like any user's; a tenth is held out)."""
    file = out / "pairs.jsonl"
    if not file.exists():
        out.mkdir(parents=True, exist_ok=True)
        pairs = synthetic_pairs(model, rows, prompt_tokens, answer_tokens)
        file.write_text("".join(json.dumps(r) + "\n" for r in pairs))
    return file


def sweep_spec(name: str, model: Path, data: Path, reward_model: Path, smoke: bool) -> dict:
    steps, eval_steps = (6, 3) if smoke else (30, 10)
    batch = 4 if smoke else 8
    spec = {
        "name": name,
        "model": str(model),
        "dataset": {"path": str(data), "max_eval_rows": 16},
        "axes": {"loss_type": LOSS_TYPES},
        "train": {
            "beta": 0.1,
            "learning_rate": 5.0e-5,
            "max_steps": steps,
            "eval_strategy": "steps",
            "eval_steps": eval_steps,
            "logging_steps": 1,
            "per_device_train_batch_size": batch,
            "per_device_eval_batch_size": batch,
            "max_length": 1024,
            "include_num_input_tokens_seen": "non_padding",
        },
        "lora": {"r": 16, "lora_alpha": 16, "target_modules": "all-linear"},
        "quantization": "auto",
        "resources": {"cpu": 1} if smoke else {"cpu": 2, "gpu": 0.5},
        "max_concurrent_trials": 2,
        "judge": {
            "prompts": 8,
            "max_new_tokens": 16,
            "scorers": [
                {"reward_model": str(reward_model)},
                {"function": "check_scorers:brevity", "weight": 0.1},
                "builtin:verifiable",
            ],
        },
        "samples": {"prompts": 2, "max_new_tokens": 16},
        "save": "all",
        "metric": "eval_judge/score",
        "mode": "max",
    }
    if smoke:  # the GPU configuration, spelled out: `auto` means full precision on a CPU
        spec["quantization"] = GPU_CONFIGURATION["quantization"]
        spec["train"].update(GPU_CONFIGURATION["train"])
    return spec


def child_env() -> dict:
    """The environment of a child process: this repository importable (ahead of, not instead
    of, a PYTHONPATH that carries the stack), offline."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}


def sweep_cli(*args: str, cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    env = child_env()
    env.pop("MLFLOW_TRACKING_URI", None)  # the sweep's own store, in its folder
    return subprocess.run(
        [sys.executable, "-m", "sweep", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def trial_rows(folder: Path, name: str) -> list[dict]:
    """Per trial, from MLflow and its log: what the table shows."""
    from mlflow.tracking import MlflowClient

    from sweep.record import logged_models

    client = MlflowClient(f"sqlite:///{folder / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`sweep.kind` = 'trial'")
    rows = []
    for r in sorted(runs, key=lambda r: LOSS_TYPES.index(r.data.params["sweep.loss_type"])):
        m = r.data.metrics
        log = folder / "results" / name / "trials" / r.data.tags["sweep.trial_id"] / "trial.log"
        text = log.read_text() if log.exists() else ""
        rows.append(
            {
                "loss_type": r.data.params["sweep.loss_type"],
                "status": r.info.status,
                "s_per_step": m.get("time/step_s"),
                "tokens_per_s": m.get("time/tokens_per_s"),
                "peak_gpu_gib": m.get("gpu/peak_allocated_gib"),
                "peak_reserved_gib": m.get("gpu/peak_reserved_gib"),
                "base_reused": "base model: reused" in text,
                "reference_reused": "time/reference_loaded_s" in m,
                "judge_s": m.get("time/judge_s"),
                "judge_score": m.get("eval_judge/score"),
                "judged_by": sorted(k.removeprefix("eval_judge/") for k in m if k.startswith("eval_judge/"))[:10],
                "eval_rewards/accuracies": m.get("eval_rewards/accuracies"),
                "verified_eval_rewards/accuracies": m.get("verified_eval_rewards/accuracies"),
                "samples_logged": any(a.path == "samples.json" for a in client.list_artifacts(r.info.run_id)),
                "adapter_saved": logged_models.adapter_of(client, r) is not None,  # a logged model of the run
                "error": r.data.tags.get("sweep.error", "")[:300] or None,
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    cols = ("loss_type", "status", "s_per_step", "tokens_per_s", "peak_gpu_gib", "base_reused")
    cols += ("reference_reused", "judge_s", "judge_score")

    def cell(v):
        return f"{v:.3g}" if isinstance(v, float) else "-" if v is None else str(v)

    lines = [[c for c in cols]] + [[cell(r[c]) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="the same path on CPU: tiny shape, the GPU configuration")
    p.add_argument("--work", type=Path, default=REPO / "results" / "gpu-check", help="models, data and the sweep")
    p.add_argument("--out", type=Path, default=None, help="the JSON (default benchmarks/gpu_check.json; smoke: none)")
    p.add_argument("--timeout", type=int, default=540, help="seconds each sweep command may take")
    a = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not a.smoke:
        p.error("no GPU here: run with --smoke for the CPU path")
    shape = "tiny" if a.smoke else "qwen2-0.5b"
    a.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model = build_model(shape, a.work / f"model-{shape}", vocab_size=None if a.smoke else 151936)
    reward_model = build_reward_model(model, a.work / "reward-model")
    tokens = (32, 32) if a.smoke else (256, 256)
    data = build_data(model, a.work / f"data-{tokens[0]}-{tokens[1]}", 440, *tokens)
    folder = a.work / ("smoke" if a.smoke else "sweep")
    shutil.rmtree(folder, ignore_errors=True)  # a fresh sweep, not a resumed one
    folder.mkdir(parents=True)
    (folder / "check_scorers.py").write_text(SCORERS_MODULE)
    name = "gpu_check"
    (folder / "spec.yaml").write_text(yaml.safe_dump(sweep_spec(name, model, data, reward_model, a.smoke)))
    built_s = time.time() - t0
    device = torch.cuda.get_device_name(0) if cuda and not a.smoke else "cpu"
    print(f"gpu_check on {device}: {shape}, {len(LOSS_TYPES)} trials, work dir {folder}", flush=True)

    steps = {}
    for step, args in (
        ("run", ("run", "spec.yaml", "--progress-interval", "30")),
        ("evaluate", ("evaluate", name, "--tolerance", "0.02")),
        ("promote", ("promote", name, "--out", str(folder / "promoted"))),
    ):
        t = time.time()
        proc = sweep_cli(*args, cwd=folder, timeout=a.timeout)
        steps[step] = {"exit": proc.returncode, "wall_s": round(time.time() - t, 1)}
        if step == "evaluate":  # its last line: the largest difference from the logged metrics
            steps[step]["said"] = proc.stderr.strip().splitlines()[-1:]
        print(f"sweep {step}: exit {proc.returncode} in {steps[step]['wall_s']} s", flush=True)
        if proc.returncode != 0:
            steps[step]["stderr"] = proc.stderr[-3000:]
            print(proc.stdout[-2000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
            if step == "run" and not (folder / "results" / "mlflow.db").exists():
                break
    rows = trial_rows(folder, name) if (folder / "results" / "mlflow.db").exists() else []
    print(table(rows), flush=True)
    ok = all(s["exit"] == 0 for s in steps.values()) and len(steps) == 3
    ok = ok and len(rows) == len(LOSS_TYPES) and all(r["status"] == "FINISHED" for r in rows)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "device": device,
        "torch": torch.__version__,
        "smoke": a.smoke,
        "shape": shape,
        "shape_config": SHAPES[shape],
        "prompt_tokens": tokens[0],
        "answer_tokens": tokens[1],
        "spec": yaml.safe_load((folder / "spec.yaml").read_text()),
        "models_built_s": round(built_s, 1),
        "commands": steps,
        "trials": rows,
        "passed": ok,
    }
    out = a.out or (None if a.smoke else REPO / "benchmarks" / "gpu_check.json")
    if out is not None:
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"gpu_check {'passed' if ok else 'FAILED'} in {time.time() - t0:.0f} s", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
