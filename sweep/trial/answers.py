"""What one model answers to the judged prompts and how it scored: `generate` (batched, KV
cache, greedy unless the spec asks for sampling), `Judged` (answers, lengths, each scorer's
scores and the weighted totals), and each prompt's outcome against the base model's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .scorers import Scorer


def generate(
    model, tokenizer, prompts: list, max_new_tokens: int, batch_size: int, generation: dict[str, Any]
) -> tuple[list[str], list[int]]:
    """Answers to `prompts` (message lists through the chat template, or raw text), batched
    with left padding and the KV cache; and each answer's length in tokens (end of turn and
    padding not counted)."""
    import torch

    settings = {k: v for k, v in generation.items() if k != "seed"}
    settings.setdefault("do_sample", False)
    if "seed" in generation:
        torch.manual_seed(generation["seed"])
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    stop = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    was_training = model.training
    model.eval()
    texts, lengths = [], []
    try:
        for i in range(0, len(prompts), batch_size):
            part = prompts[i : i + batch_size]
            if isinstance(part[0], list):
                enc = tokenizer.apply_chat_template(
                    part, add_generation_prompt=True, padding=True, return_dict=True, return_tensors="pt"
                )
            else:
                enc = tokenizer(part, padding=True, return_tensors="pt")
            enc = {k: v.to(model.device) for k, v in enc.items()}
            with torch.no_grad():
                out = model.generate(
                    **enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **settings
                )
            for row in out[:, enc["input_ids"].shape[1] :].tolist():
                n = next((j for j, t in enumerate(row) if t in stop), len(row))
                texts.append(tokenizer.decode(row[:n], skip_special_tokens=True).strip())
                lengths.append(n)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return texts, lengths


@dataclass
class Judged:
    """Answers to the judged prompts with every score: one model at one step."""

    answers: list[str]
    lengths: list[int]
    scores: dict[str, list[float | None]]  # scorer name -> per prompt
    totals: list[float | None]
    verdicts: dict[str, list[str]] = field(default_factory=dict)  # an LLM judge's name -> what it wrote

    def metrics(self, prefix: str) -> dict[str, float]:
        out = {f"{prefix}{name}": mean_present(values) for name, values in self.scores.items()}
        out[f"{prefix}score"] = mean_present(self.totals)
        out[f"{prefix}length"] = sum(self.lengths) / max(len(self.lengths), 1)
        return {k: v for k, v in out.items() if v is not None}


def mean_present(values) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def totals(scorers: list[Scorer], scores: dict[str, list[float | None]], n: int) -> list[float | None]:
    """Per answer: the weighted sum of its scores, scorers returning None left out (GRPO's
    nansum over `reward_weights`); None where no scorer applies."""
    out = []
    for i in range(n):
        parts = [s.weight * scores[s.name][i] for s in scorers if scores[s.name][i] is not None]
        out.append(sum(parts) if parts else None)
    return out


def outcomes(trial: list[float | None], base: list[float | None]) -> list[float | None]:
    """Per prompt: 1 where the trial's total beats the base model's, 0.5 for a tie, 0 for a loss."""
    return [
        None if t is None or b is None else (1.0 if t > b else 0.5 if t == b else 0.0)
        for t, b in zip(trial, base, strict=True)
    ]
