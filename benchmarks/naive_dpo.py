"""The naive way to run one point of a DPO sweep: a fresh process, a plain TRL script.

Imports the stack, loads the base model, tokenises the data and lets DPOTrainer compute the
reference log-probs inline at every step; writes its final metrics and phase timings as JSON.
Used by benchmarks/sweep_speedup.py as the baseline (the same settings as `sweep`'s trials).

    python benchmarks/naive_dpo.py --model DIR --data DIR --config '{"train": {...}, "lora": {...}}' --out m.json
"""

import time

T_PROCESS = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="directory with train.jsonl and test.jsonl")
    p.add_argument(
        "--config",
        required=True,
        help="JSON: {train: DPOConfig kwargs, lora: LoraConfig kwargs, max_eval_rows: N,"
        " quantization: BitsAndBytesConfig kwargs (optional; on the GPU)}",
    )
    p.add_argument("--out", required=True)
    a = p.parse_args()
    cfg = json.loads(a.config)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import datasets
    import torch
    from peft import LoraConfig
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        BitsAndBytesConfig,
        set_seed,
    )
    from trl import DPOConfig, DPOTrainer

    from sweep.trial.callbacks import StepStats  # measures only

    cuda = torch.cuda.is_available() and not cfg["train"].get("use_cpu")
    if not cuda:
        torch.set_num_threads(1)
    t_imported = time.time()
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    load = {"dtype": torch.bfloat16 if cfg["train"].get("bf16") else torch.float32}
    if cfg.get("quantization"):  # QLoRA: the 4-bit base on the GPU
        load.update(quantization_config=BitsAndBytesConfig(**cfg["quantization"]), device_map={"": 0})
    model = AutoModelForCausalLM.from_pretrained(a.model, **load)
    t_loaded = time.time()
    data = datasets.load_dataset("json", data_files={"train": f"{a.data}/train.jsonl", "test": f"{a.data}/test.jsonl"})
    evaluation = data["test"].shuffle(seed=0).select(range(cfg["max_eval_rows"]))
    args = DPOConfig(**cfg["train"])
    set_seed(args.seed)
    stats = StepStats()
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=LoraConfig(**cfg["lora"]),
        callbacks=[stats],
    )
    t_tokenized = time.time()
    trainer.train()
    t_trained = time.time()
    last_eval = max((h["step"] for h in trainer.state.log_history if "eval_loss" in h), default=-1)
    if last_eval != trainer.state.global_step:  # finish on a held-out measurement, as sweep's trials do
        trainer.evaluate()
    final: dict = {}
    for entry in trainer.state.log_history:
        final.update({k: v for k, v in entry.items() if isinstance(v, (int, float))})
    final.update(stats.measured)
    final["phases"] = {
        "start-up": t_imported - T_PROCESS,
        "model load": t_loaded - t_imported,
        "tokenize": t_tokenized - t_loaded,
        "training (with inline reference)": t_trained - t_tokenized,
    }
    with open(a.out, "w") as f:
        json.dump(final, f)


if __name__ == "__main__":
    main()
