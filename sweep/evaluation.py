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

import os
import tempfile
from typing import Any


class PairedEval:
    """`PairedEval(model, tokenizer, pairs, ...)()` -> {"eval_rewards/accuracies": ..., ...}.

    Built once (it tokenises the pairs once); call it whenever the model has changed.
    """

    def __init__(self, model, tokenizer, pairs, *, beta: float, max_length: int | None, batch_size: int,
                 cpu: bool, bf16: bool = False, truncation_mode: str = "keep_start"):  # fmt: skip
        from trl import DPOConfig, DPOTrainer

        self._dir = tempfile.mkdtemp(prefix="sweep-eval-")
        args = DPOConfig(
            output_dir=self._dir, beta=beta, max_length=max_length, truncation_mode=truncation_mode,
            per_device_eval_batch_size=batch_size, report_to=[], disable_tqdm=True, use_cpu=cpu,
            bf16=bf16, fp16=False, dataloader_num_workers=0, save_strategy="no",
        )  # fmt: skip
        # DPOTrainer insists on a train dataset; one row is tokenised and never used.
        self.trainer = DPOTrainer(
            model=model, args=args, train_dataset=pairs.select(range(1)), eval_dataset=pairs, processing_class=tokenizer
        )
        # Given a PeftModel, TRL 1.16's DPOTrainer adds a "ref" adapter copying the current one and
        # uses it as the reference (right for re-training an adapter, wrong here: the reference
        # is the base model). It would also become the reference of a KTO trainer sharing the
        # model. Remove it: TRL then disables the adapter for the reference, as during training.
        if "ref" in getattr(model, "peft_config", {}):
            model.delete_adapter("ref")

    def __call__(self, prefix: str = "eval") -> dict[str, float]:
        metrics = self.trainer.evaluate(metric_key_prefix=prefix)
        keep = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected")
        return {f"{prefix}_{k}": float(metrics[f"{prefix}_{k}"]) for k in keep if f"{prefix}_{k}" in metrics}


def paired_metrics(model, tokenizer, pairs, **kwargs: Any) -> dict[str, float]:
    """One-shot `PairedEval`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return PairedEval(model, tokenizer, pairs, **kwargs)()
