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

`Judge` composes the parts: answering and scoring (`answers.py`), the base model's answers
once per sweep (`base_answers.py`) and the record in MLflow (`record/judge_tables.py`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from ..record import judge_tables
from .answers import Judged, generate, mean_present, outcomes, totals
from .base_answers import base_answers
from .scorers import PREFIX, TOTALS, Scorer, call_scorer, check_scores, columns_of, text_of

BASE_PREFIX = "base_judge/"  # the base model's, on the parent run
SCORE, WIN_RATE, LENGTH = (PREFIX + name for name in TOTALS)


def held_out_rows(spec, data=None):
    """The judged rows: the first `judge.prompts` of the eval split, with the dataset's other
    columns (`data`: that split, if loaded already with them)."""
    if data is None:
        from ..data import load_preference_data

        data = load_preference_data(spec.dataset, keep_columns=True)["eval"]
    return data.select(range(min(spec.judge.prompts, len(data))))


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
            self.base = base_answers(model, self.judge, self.cache_dir, self._key(), len(self.prompts), self._log_base)
        judged = self.last = self.judge(model)
        wins = outcomes(judged.totals, self.base.totals)
        metrics = judged.metrics(PREFIX)
        win_rate = mean_present(wins)
        if win_rate is not None:
            metrics[WIN_RATE] = win_rate
        if self.uri and self.run_id:
            judge_tables.log_evaluation(self.uri, self.run_id, step, self.table(judged, wins))
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

    def _log_base(self, base: Judged) -> None:
        if self.uri and self.parent_run_id:
            metrics = base.metrics(BASE_PREFIX)
            judge_tables.log_base(self.uri, self.parent_run_id, metrics, self.frame(base), BASE_PREFIX + "score")

    def _key(self) -> dict:
        """What the base answers and scores depend on, besides the model (`base_answers.cache_key`)."""
        return {
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
