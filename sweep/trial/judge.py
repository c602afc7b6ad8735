"""Judged generations: rank trials by what the models say, not only by a proxy.

At its evaluations a trial answers the first `judge.prompts` held-out prompts (batched,
KV cache, greedy unless the spec asks for sampling), scores the answers and logs, beside
TRL's `eval_rewards/*`:

    eval_judge/<scorer>   mean score of each scorer (over the prompts it applies to)
    eval_judge/score      the weighted total per answer (sum of weight x score), averaged
    eval_judge/win_rate   share of prompts where the trial's total beats the base model's (ties count half)
    eval_judge/length     mean answer length in tokens (length exploitation shows up here)

and, per LLM judge (llm_judge.py), `eval_judge/<name>_unparsed` (verdicts not in the format)
and, pairwise, `eval_judge/<name>_lc` (the length-controlled win rate against the base model);
its raw verdicts are the table's `<name>_verdict` column.

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
from dataclasses import dataclass
from pathlib import Path

from ..record import judge_tables
from .answers import Judged, generate, mean_present, outcomes, totals
from .base_answers import base_answers
from .llm_judge import judge_model, length_controlled_win_rate, pairwise_outcome, parse_verdict, read_template, render
from .scorers import PREFIX, TOTALS, Scorer, call_scorer, check_scores, columns_of, text_of

BASE_PREFIX = "base_judge/"  # the base model's, on the parent run
SCORE, WIN_RATE, LENGTH = (PREFIX + name for name in TOTALS)


@dataclass
class Verdicts:
    scores: list[float | None]  # per prompt: the outcome (pairwise) or the grade; None: unparseable
    raw: list[str]  # per prompt: what the judge wrote


def judge_answers(
    scorer, prompts: list, answers: list[str], baseline: list[str] | None, device: str, batch_size: int
) -> Verdicts:
    """The judge's verdicts on `answers`. Pairwise against `baseline` (the base model's answers
    to the same prompts); where there is none, the answers are the base model's and each is a
    tie with itself."""
    if scorer.mode == "pairwise" and baseline is None:
        return Verdicts([0.5] * len(answers), [""] * len(answers))
    template = read_template(scorer.template, scorer.mode, scorer.source)
    questions = [text_of(p) for p in prompts]
    if scorer.mode == "grade":
        texts = [render(template, question=q, answer=a) for q, a in zip(questions, answers, strict=True)]
    else:
        texts = [
            render(template, question=q, answer_a=first, answer_b=second)
            for q, a, b in zip(questions, answers, baseline, strict=True)
            for first, second in ((a, b), (b, a))
        ]
    model, tokenizer = judge_model(scorer.source, scorer.device or device)
    asked = [[{"role": "user", "content": t}] for t in texts] if tokenizer.chat_template else texts
    said, _ = generate(model, tokenizer, asked, scorer.max_new_tokens, batch_size, {})
    if scorer.mode == "grade":
        return Verdicts([parse_verdict("grade", s) for s in said], said)
    pairs = list(zip(said[0::2], said[1::2], strict=True))
    scores = [pairwise_outcome(parse_verdict("pairwise", x), parse_verdict("pairwise", y)) for x, y in pairs]
    return Verdicts(scores, [f"trial as A: {x} | trial as B: {y}" for x, y in pairs])


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

    def judge(self, model, baseline: list[str] | None = None) -> Judged:
        """`model`'s answers, scored; an LLM judge compares them with `baseline` (the base
        model's answers; None: these are the base model's)."""
        answers, lengths = generate(
            model,
            self.tokenizer,
            self.prompts,
            self.settings.max_new_tokens,
            self.settings.batch_size,
            self.settings.generation,
        )
        scores, verdicts = {}, {}
        for i, s in enumerate(self.scorers):
            if s.kind == "llm":
                said = judge_answers(s, self.prompts, answers, baseline, str(model.device), self.settings.batch_size)
                scores[s.name], verdicts[s.name] = said.scores, said.raw
                continue
            raw = call_scorer(s, self.prompts, answers, self.columns, self.import_paths, device=str(model.device))
            scores[s.name] = check_scores(f"judge.scorers[{i}]", s, raw, len(answers))
        return Judged(answers, lengths, scores, totals(self.scorers, scores, len(answers)), verdicts)

    def __call__(self, model, step: int) -> dict[str, float]:
        t0 = time.time()
        if self.base is None:
            self.base = base_answers(model, self.judge, self.cache_dir, self._key(), len(self.prompts), self._log_base)
        judged = self.last = self.judge(model, baseline=self.base.answers)
        wins = outcomes(judged.totals, self.base.totals)
        metrics = judged.metrics(PREFIX) | self._llm_metrics(judged, step)
        win_rate = mean_present(wins)
        if win_rate is not None:
            metrics[WIN_RATE] = win_rate
        if self.uri and self.run_id:
            judge_tables.log_evaluation(self.uri, self.run_id, step, self.table(judged, wins))
        self.seconds += time.time() - t0
        metrics["time/judge_s"] = self.seconds
        return metrics

    def _llm_metrics(self, judged: Judged, step: int) -> dict[str, float]:
        """Per LLM judge: its unparseable verdicts (counted, and said in the trial's log) and,
        pairwise, the length-controlled win rate."""
        out = {}
        for s in self.scorers:
            if s.kind != "llm":
                continue
            scores = judged.scores[s.name]
            unparsed = [i for i, v in enumerate(scores) if v is None]
            out[f"{PREFIX}{s.name}_unparsed"] = float(len(unparsed))
            if unparsed:
                example = judged.verdicts[s.name][unparsed[0]][:200]
                print(
                    f"judge {s.name} at step {step}: {len(unparsed)} of {len(scores)} verdicts unparseable "
                    f"(not counted), e.g. {example!r}",
                    flush=True,
                )
            if s.mode == "pairwise":
                lc = length_controlled_win_rate(scores, judged.lengths, self.base.lengths)
                if lc is not None:
                    out[f"{PREFIX}{s.name}_lc"] = lc
        return out

    def frame(self, judged: Judged):
        """One model's answers: prompt, answer, each scorer's score, the total, the length."""
        import pandas as pd

        df = pd.DataFrame({"prompt": [text_of(p) for p in self.prompts], "answer": judged.answers})
        for s in self.scorers:
            df[s.name] = judged.scores[s.name]
            if s.name in judged.verdicts:
                df[f"{s.name}_verdict"] = judged.verdicts[s.name]
        df["score"], df["length"] = judged.totals, judged.lengths
        return df

    def table(self, judged: Judged, wins: list[float | None]):
        """The per-prompt table of an evaluation: the trial's answers and scores beside the base
        model's (`base`, `base_<scorer>`, `base_score`) and the outcome of each comparison. The
        answer is the column after the prompt: what MLflow's evaluation view compares by default."""
        df = self.frame(judged)
        base = self.frame(self.base).drop(columns=["prompt"])
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
