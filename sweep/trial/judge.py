"""Judged generations: rank trials by what the models say, not only by a proxy.

At its evaluations a trial answers the first `judge.prompts` held-out prompts (batched,
KV cache, greedy unless the spec asks for sampling), scores the answers and logs, beside
TRL's `eval_rewards/*`:

    eval_judge/<scorer>   mean score of each scorer (over the prompts it applies to)
    eval_judge/score      the weighted total per answer (sum of weight x score), averaged
    eval_judge/win_rate   share of prompts where the trial's total beats the base model's (ties count half)
    eval_judge/length     mean answer length in tokens (length exploitation shows up here)

and the per-prompt table (prompt, base answer, trial answer, every score) as the run's
artifact `judge/step-<step>.json`, from which each metric can be re-derived. The base
model's answers and scores are computed once per sweep (cached beside the reference
log-probs) and logged on the parent run as `base_judge/*`.

Scorers (scorers.py) follow TRL GRPO's `reward_funcs` convention; totals are weighted sums
(GRPO's `reward_weights`), so with one scorer the total is its score.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import write_atomic
from ..record.tracking import client, log_metrics
from ..runtime.shared_cache import model_identity
from .scorers import PREFIX, TOTALS, Scorer, call_scorer, check_scores, columns_of, text_of

BASE_PREFIX = "base_judge/"  # the base model's, on the parent run
SCORE, WIN_RATE, LENGTH = (PREFIX + name for name in TOTALS)
TABLE_DIR = "judge"  # artifact folder of the per-prompt tables
BASE_TABLE = f"{TABLE_DIR}/base.json"


# ---- generation ---------------------------------------------------------------------------------


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


def held_out_rows(spec, data=None):
    """The judged rows: the first `judge.prompts` of the eval split, with the dataset's other
    columns (`data`: that split, if loaded already with them)."""
    if data is None:
        from ..data import load_preference_data

        data = load_preference_data(spec.dataset, keep_columns=True)["eval"]
    return data.select(range(min(spec.judge.prompts, len(data))))


# ---- judging a trial -----------------------------------------------------------------------------


@dataclass
class Judged:
    """Answers to the judged prompts with every score: one model at one step."""

    answers: list[str]
    lengths: list[int]
    scores: dict[str, list[float | None]]  # scorer name -> per prompt
    totals: list[float | None]

    def metrics(self, prefix: str) -> dict[str, float]:
        out = {f"{prefix}{name}": _mean(values) for name, values in self.scores.items()}
        out[f"{prefix}score"] = _mean(self.totals)
        out[f"{prefix}length"] = sum(self.lengths) / max(len(self.lengths), 1)
        return {k: v for k, v in out.items() if v is not None}


def _mean(values) -> float | None:
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


class Judge:
    """Built once per trial; `judge(model, step)` -> the metrics of that evaluation.

    `rows`: the judged held-out rows (prompt and the dataset's other columns)."""

    def __init__(
        self,
        settings,
        rows,
        tokenizer,
        *,
        cache_dir: Path | None,
        import_paths: list[str],
        uri: str | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
    ):
        self.settings, self.rows, self.tokenizer = settings, rows, tokenizer
        self.scorers: list[Scorer] = list(settings.scorers)
        self.cache_dir, self.import_paths = cache_dir, import_paths
        self.uri, self.run_id, self.parent_run_id = uri, run_id, parent_run_id
        self.prompts = list(rows["prompt"])
        self.columns = columns_of(rows)
        self.base: Judged | None = None
        self.seconds = 0.0
        self.last: Judged | None = None  # the latest evaluation's answers and scores

    def judge(self, model) -> Judged:
        answers, lengths = generate(
            model,
            self.tokenizer,
            self.prompts,
            self.settings.max_new_tokens,
            self.settings.batch_size,
            self.settings.generation,
        )
        scores = {}
        for i, s in enumerate(self.scorers):
            raw = call_scorer(s, self.prompts, answers, self.columns, self.import_paths, device=str(model.device))
            scores[s.name] = check_scores(f"judge.scorers[{i}]", s, raw, len(answers))
        return Judged(answers, lengths, scores, totals(self.scorers, scores, len(answers)))

    def __call__(self, model, step: int) -> dict[str, float]:
        t0 = time.time()
        if self.base is None:
            self.base = self._base(model)
        judged = self.last = self.judge(model)
        wins = outcomes(judged.totals, self.base.totals)
        metrics = judged.metrics(PREFIX)
        win_rate = _mean(wins)
        if win_rate is not None:
            metrics[WIN_RATE] = win_rate
        if self.uri and self.run_id:
            from ..compat.mlflow_internals import table_offered_first

            path = f"{TABLE_DIR}/step-{step:06d}.json"
            client(self.uri).log_table(self.run_id, data=self.table(judged, wins), artifact_file=path)
            table_offered_first(client(self.uri), self.run_id, path)  # the UI compares the latest answers
        self.seconds += time.time() - t0
        metrics["time/judge_s"] = self.seconds
        return metrics

    def frame(self, judged: Judged):
        """One model's answers: prompt, answer, each scorer's score, the total, the length."""
        import pandas as pd

        df = pd.DataFrame({"prompt": [text_of(p) for p in self.prompts], "answer": judged.answers})
        for s in self.scorers:
            df[s.name] = judged.scores[s.name]
        df["score"], df["length"] = judged.totals, judged.lengths
        return df

    def table(self, judged: Judged, wins: list[float | None]):
        """The per-prompt table of an evaluation: the trial's answers and scores beside the base
        model's (`base`, `base_<scorer>`, `base_score`) and the outcome of each comparison. The
        answer is the column after the prompt: what MLflow's evaluation view compares by default."""
        df = self.frame(judged)
        base = self.frame(self.base).drop(columns=["prompt", "length"])
        df.insert(2, "base", base.pop("answer"))
        for column in base:
            df[f"base_{column}"] = base[column]
        df["outcome"] = ["win" if w == 1 else "tie" if w == 0.5 else "loss" if w == 0 else None for w in wins]
        return df

    def _base(self, model) -> Judged:
        """The base model's answers and scores: from the sweep's cache, or computed here with the
        adapter disabled and written there (one trial computes them, the others wait and read)."""
        if self.cache_dir is None:
            return self._judge_base(model)
        from filelock import FileLock

        path = self.cache_dir / f"judge-{self._key(model)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            base = self._cached_base(path)
            if base is None:
                base = self._judge_base(model)
                write_atomic(path, json.dumps(dataclasses.asdict(base)))
            self._log_base(base)  # under the lock: the parent run gets them once
        return base

    def _cached_base(self, path: Path) -> Judged | None:
        """The cached base answers, or None where there are none or the file is damaged (then
        they are computed again, with a warning): never scores of other prompts."""
        if not path.exists():
            return None
        try:
            base = Judged(**json.loads(path.read_text()))
            lists = (base.answers, base.lengths, base.totals, *base.scores.values())
            if all(len(values) == len(self.prompts) for values in lists):
                return base
        except (ValueError, TypeError, AttributeError):
            pass
        print(f"warning: judge cache {path} is damaged; answering with the base model again", flush=True)
        return None

    def _judge_base(self, model) -> Judged:
        import contextlib

        with model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext():
            return self.judge(model)

    def _log_base(self, base: Judged) -> None:
        if not (self.uri and self.parent_run_id):
            return

        c = client(self.uri)
        if BASE_PREFIX + "score" in c.get_run(self.parent_run_id).data.metrics:
            return
        log_metrics(self.uri, self.parent_run_id, base.metrics(BASE_PREFIX), 0)
        c.log_table(self.parent_run_id, data=self.frame(base), artifact_file=BASE_TABLE)

    def _key(self, model) -> str:
        """Hash of what the base answers and scores depend on."""
        import torch
        import transformers

        parts = {
            "versions": [transformers.__version__, torch.__version__],
            "model": model_identity(model),
            "device": str(model.device),
            "tokenizer": [
                type(self.tokenizer).__name__,
                len(self.tokenizer),
                self.tokenizer.chat_template,
                self.tokenizer.eos_token,
            ],
            "prompts": self.prompts,
            "columns": self.columns,
            "generation": [self.settings.max_new_tokens, self.settings.batch_size, self.settings.generation],
            "scorers": [dataclasses.asdict(s) for s in self.scorers],
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
