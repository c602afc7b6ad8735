"""Held-out preference metrics of an adapter, computed the way DPO defines them.

The implicit reward of a completion is beta x (policy log-prob - reference log-prob), summed
over its tokens; the reference is the base model (the adapter disabled). On held-out pairs:
accuracy = share of pairs whose chosen reward beats the rejected one, margin = mean gap.

TRL's own `DPOTrainer.evaluate` computes exactly this, so we use it (with the model as it is:
no new adapter, no training) rather than a second copy of its tokenisation and masking:
- KTO trials train on unpaired rows and log no accuracy; this gives them the same
  `eval_rewards/accuracies` as DPO trials, so every family lands in one comparable table;
- `sweep evaluate` recomputes a finished trial's metrics from its saved adapter.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any


class PairedEval:
    """`PairedEval(model, tokenizer, pairs, ...)()` -> {"eval_rewards/accuracies": ..., ...}.

    Built once (it tokenises the pairs once); call it whenever the model has changed.
    """

    def __init__(
        self,
        model,
        tokenizer,
        pairs,
        *,
        beta: float,
        max_length: int | None,
        batch_size: int,
        cpu: bool,
        bf16: bool = False,
        truncation_mode: str = "keep_start",
    ):
        from transformers import PrinterCallback
        from trl import DPOConfig, DPOTrainer

        self._dir = tempfile.TemporaryDirectory(prefix="sweep-eval-")  # removed with this object (or at exit)
        args = DPOConfig(
            output_dir=self._dir.name,
            beta=beta,
            max_length=max_length,
            truncation_mode=truncation_mode,
            per_device_eval_batch_size=batch_size,
            report_to=[],
            disable_tqdm=True,
            use_cpu=cpu,
            bf16=bf16,
            fp16=False,
            dataloader_num_workers=0,
            save_strategy="no",
        )
        # DPOTrainer insists on a train dataset; one row is tokenised and never used. Built on a
        # 4-bit model, it casts the trainable (LoRA) weights to bf16 for QLoRA training: on a live
        # trial's model that would leave its optimizer's fp32 state behind (the next step fails).
        with _frozen(model):
            self.trainer = DPOTrainer(
                model=model,
                args=args,
                train_dataset=pairs.select(range(1)),
                eval_dataset=pairs,
                processing_class=tokenizer,
            )
        self.trainer.remove_callback(PrinterCallback)  # it prints every eval's log dict
        from ..compat.hf_internals import drop_trl_ref_adapter

        drop_trl_ref_adapter(model)  # the reference is the base model, not a copy of the adapter

    def __call__(self, prefix: str = "eval") -> dict[str, float]:
        metrics = self.trainer.evaluate(metric_key_prefix=prefix)
        keep = (
            "rewards/accuracies",
            "rewards/margins",
            "rewards/chosen",
            "rewards/rejected",
            "logps/chosen",
            "logps/rejected",
        )
        return {f"{prefix}_{k}": float(metrics[f"{prefix}_{k}"]) for k in keep if f"{prefix}_{k}" in metrics}


@contextlib.contextmanager
def _frozen(model):
    """`model` with no trainable parameter for the duration: a trainer built on it for
    evaluation then leaves the trial's own weights (and their dtypes) as they are."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in trainable:
            p.requires_grad_(True)


def paired_metrics(model, tokenizer, pairs, **kwargs: Any) -> dict[str, float]:
    """One-shot `PairedEval`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return PairedEval(model, tokenizer, pairs, **kwargs)()


def generate_samples(model, tokenizer, prompts: list, max_new_tokens: int):
    """Greedy answers of the adapted model and of the base model (adapter disabled) to `prompts`,
    as a DataFrame with columns prompt, base, answer."""
    import pandas as pd
    import torch

    rows = []
    was_training = model.training
    model.eval()
    for prompt in prompts:
        if isinstance(prompt, list):
            ids = tokenizer.apply_chat_template(
                prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            shown = prompt[-1]["content"]
        else:
            ids = tokenizer(prompt, return_tensors="pt")
            shown = prompt
        ids = {k: v.to(model.device) for k, v in ids.items()}
        kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        with torch.no_grad():
            answer = model.generate(**ids, **kwargs)
            with model.disable_adapter():
                base = model.generate(**ids, **kwargs)
        n = ids["input_ids"].shape[1]
        rows.append(
            {
                "prompt": shown,
                "base": tokenizer.decode(base[0, n:], skip_special_tokens=True).strip(),
                "answer": tokenizer.decode(answer[0, n:], skip_special_tokens=True).strip(),
            }
        )
    model.train(was_training)
    return pd.DataFrame(rows)


# ---- finished trials, from MLflow: verify their metrics, promote the best ------------------
