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

Scorers follow TRL GRPO's `reward_funcs` convention:
- `builtin:<name>`: scorers shipped here (BUILTIN_SCORERS);
- `module:function`: a callable taking `prompts`, `completions` and the dataset's other
  columns as keyword arguments, returning one float (or None: not applicable) per completion;
  completions are message lists where prompts are, as in GRPO;
- anything else: a reward model, a local directory or hub id of a sequence-classification
  model with one label, loaded once per worker and kept there.
Each may be `{builtin|function|reward_model: ..., weight: w, name: n}`; totals are weighted
sums (GRPO's `reward_weights`), so with one scorer the total is its score.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX = "eval_judge/"  # per-evaluation metrics of a trial
BASE_PREFIX = "base_judge/"  # the base model's, on the parent run
SCORE, WIN_RATE, LENGTH = PREFIX + "score", PREFIX + "win_rate", PREFIX + "length"
TABLE_DIR = "judge"  # artifact folder of the per-prompt tables
BASE_TABLE = f"{TABLE_DIR}/base.json"
GENERATION_FIELDS = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "num_beams", "seed")
FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ScorerError(ValueError):
    """A scorer that cannot be used; `where` names its place in the spec."""

    def __init__(self, where: str, message: str):
        self.where = where
        super().__init__(message)


# ---- builtin scorers ----------------------------------------------------------------------


def verifiable(prompts, completions, answer=None, chosen=None, **_) -> list[float | None]:
    """1 for exactly the reference answer, 0.5 for an answer that contains it among other words
    (correct but rambling), 0 otherwise (wrong). The reference is the dataset's `answer`
    column where it has one, else the chosen answer."""
    refs = answer if answer is not None else chosen
    if refs is None:
        return [None] * len(completions)
    scores = []
    for completion, ref in zip(completions, refs, strict=True):
        ref = text_of(ref).strip() if ref is not None else ""
        if not ref:
            scores.append(None)
            continue
        said = text_of(completion).strip()
        if said.rstrip(".!") == ref.rstrip(".!"):
            scores.append(1.0)
        elif re.search(rf"(?<!\w){re.escape(ref)}(?!\w)", said):
            scores.append(0.5)
        else:
            scores.append(0.0)
    return scores


BUILTIN_SCORERS = {"verifiable": verifiable}


def text_of(value: Any) -> str:
    """The text of a completion or prompt: a string, or the last message of a message list."""
    if isinstance(value, list):
        return str(value[-1].get("content") or "") if value else ""
    return "" if value is None else str(value)


# ---- the spec's scorers -----------------------------------------------------------------------


@dataclass(frozen=True)
class Scorer:
    kind: str  # builtin | function | reward_model
    source: str  # builtin name, "module:function", or a model path / hub id
    name: str  # the metric is eval_judge/<name>
    weight: float = 1.0


def parse_scorer(where: str, raw: Any) -> Scorer:
    """A spec entry (`builtin:verifiable`, `pkg.mod:fn`, a model path, or a mapping with
    `builtin`/`function`/`reward_model` and optional `weight`, `name`) as a Scorer; checks the form only."""
    weight, name = 1.0, None
    if isinstance(raw, dict):
        kinds = [k for k in ("builtin", "function", "reward_model") if k in raw]
        extra = set(raw) - {"builtin", "function", "reward_model", "weight", "name"}
        if len(kinds) != 1 or extra:
            raise ScorerError(where, f"needs exactly one of builtin, function, reward_model (and optional weight, name); got {sorted(raw)}")
        kind, source = kinds[0], raw[kinds[0]]
        weight, name = raw.get("weight", 1.0), raw.get("name")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ScorerError(f"{where}.weight", f"must be a number, got {weight!r}")
        if name is not None and not (isinstance(name, str) and re.fullmatch(r"[\w.-]+", name)):
            raise ScorerError(f"{where}.name", f"must be letters, digits, '_', '-' or '.', got {name!r}")
        if kind == "builtin" and isinstance(source, str) and not source.startswith("builtin:"):
            source = f"builtin:{source}"
    else:
        source = raw
        kind = None
    if not isinstance(source, str) or not source.strip():
        raise ScorerError(where, f"must be builtin:<name>, module:function or a reward model path, got {source!r}")
    if source.startswith("builtin:"):
        kind, source = "builtin", source.removeprefix("builtin:")
        if source not in BUILTIN_SCORERS:
            raise ScorerError(where, f"unknown builtin scorer {source!r}; valid: {', '.join(f'builtin:{b}' for b in BUILTIN_SCORERS)}")
    elif kind == "function" or (kind is None and FUNCTION.match(source) and not Path(source).exists()):
        kind = "function"
        if not FUNCTION.match(source):
            raise ScorerError(where, f"a function scorer is module:function (e.g. my_scorers:brevity), got {source!r}")
    else:
        kind = "reward_model"
    if name is None:
        name = source if kind == "builtin" else source.split(":")[1] if kind == "function" else Path(source.rstrip("/")).name
    return Scorer(kind, source, name, float(weight))


def check_scorer(where: str, scorer: Scorer, import_paths: list[str]) -> None:
    """What can be known before anything trains: the callable imports and takes `prompts` and
    `completions`; a reward model is a sequence classifier with one label."""
    if scorer.kind == "function":
        fn = load_function(scorer.source, import_paths, where)
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            return  # a builtin or C callable: judged by the probe
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            missing = [a for a in ("prompts", "completions") if a not in params]
            if missing:
                raise ScorerError(where, f"{scorer.source} must take prompts and completions as keyword arguments "
                                         f"(as GRPO's reward functions do: def f(prompts, completions, **kwargs)); it lacks {', '.join(missing)}")
    elif scorer.kind == "reward_model":
        config = _reward_model_config(where, scorer.source)
        if config is None:
            return  # a hub id not in the local cache: checked when a worker loads it
        archs = config.get("architectures") or []
        if not any(a.endswith("ForSequenceClassification") for a in archs):
            raise ScorerError(where, f"{scorer.source} is not a sequence-classification (reward) model: its architectures "
                                     f"are {archs or 'not given'}; a reward model is an AutoModelForSequenceClassification with one label")
        labels = len(config.get("id2label") or {}) or config.get("num_labels", 2)
        if labels != 1:
            raise ScorerError(where, f"{scorer.source} has {labels} labels; a reward model has one (num_labels=1)")


def load_function(source: str, import_paths: list[str], where: str = "judge.scorers"):
    import importlib

    module_name, attr = source.split(":")
    for path in import_paths:
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or the module's own error as it imports
        raise ScorerError(where, f"cannot import {module_name!r} ({type(e).__name__}: {e}); it is looked for in "
                                 f"{', '.join(import_paths) or 'sys.path'}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ScorerError(where, f"module {module_name!r} has no function {attr!r}")
    return fn


def _reward_model_config(where: str, source: str) -> dict | None:
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ScorerError(where, f"{source} is a directory without config.json: not a model")
        return json.loads((path / "config.json").read_text())
    if path.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ScorerError(where, f"reward model {source!r}: no such directory, and not a hub id (org/name)")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, "config.json")
    if isinstance(cached, str):
        return json.loads(Path(cached).read_text())
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ScorerError(where, f"reward model {source!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1")
    return None


def held_out_rows(spec, data=None):
    """The judged rows: the first `judge.prompts` of the eval split, with the dataset's other
    columns (`data`: that split, if loaded already with them)."""
    if data is None:
        from .data import load_preference_data

        data = load_preference_data(spec.dataset, keep_columns=True)["eval"]
    return data.select(range(min(spec.judge.prompts, len(data))))


def probe(scorers: list[Scorer], rows, import_paths: list[str]) -> None:
    """Call each builtin and function scorer on the first held-out rows, with their chosen
    answers as completions: a scorer that raises or returns something other than one number
    (or None) per completion is refused before anything trains."""
    sample = rows.select(range(min(2, len(rows))))
    for i, scorer in enumerate(scorers):
        if scorer.kind == "reward_model":
            continue
        where = f"judge.scorers[{i}]"
        try:
            scores = call_scorer(scorer, sample["prompt"], list(sample["chosen"]), _columns(sample), import_paths)
        except ScorerError:
            raise
        except Exception as e:
            raise ScorerError(where, f"{scorer.source} raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                                     "when called on the first held-out rows") from None
        _check_scores(where, scorer, scores, len(sample))


def _check_scores(where: str, scorer: Scorer, scores: Any, n: int) -> list[float | None]:
    if not isinstance(scores, (list, tuple)) or len(scores) != n:
        raise ScorerError(where, f"{scorer.source} must return a list of {n} scores (one per completion), got {type(scores).__name__}"
                                 + (f" of {len(scores)}" if isinstance(scores, (list, tuple)) else ""))
    out = []
    for s in scores:
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float))):
            try:  # numpy and torch scalars
                s = float(s)
            except (TypeError, ValueError):
                raise ScorerError(where, f"{scorer.source} returned a non-numeric score {s!r}; scores are floats or None") from None
        out.append(None if s is None or not math.isfinite(float(s)) else float(s))
    return out


def _columns(rows) -> dict[str, list]:
    """The dataset's other columns, as GRPO passes them to reward functions."""
    return {c: list(rows[c]) for c in rows.column_names if c not in ("prompt", "completion")}


def call_scorer(scorer: Scorer, prompts: list, completions: list[str], columns: dict[str, list],
                import_paths: list[str]) -> Any:  # fmt: skip
    conversational = bool(prompts) and isinstance(prompts[0], list)
    given = [[{"role": "assistant", "content": c}] for c in completions] if conversational else list(completions)
    if scorer.kind == "reward_model":
        return reward_model_scores(scorer.source, prompts, completions)
    fn = BUILTIN_SCORERS[scorer.source] if scorer.kind == "builtin" else load_function(scorer.source, import_paths)
    kwargs = {"prompts": prompts, "completions": given, **columns}
    try:
        params = inspect.signature(fn).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in params}  # only what it names
    except (TypeError, ValueError):
        pass
    return fn(**kwargs)


# ---- reward models, kept warm per worker ------------------------------------------------------

_REWARD_MODELS: dict[str, tuple[Any, Any]] = {}


def reward_model_scores(source: str, prompts: list, completions: list[str], batch_size: int = 16) -> list[float]:
    """The reward model's score (its single logit) of each prompt + completion, formatted with
    its own chat template where it has one."""
    import torch

    model, tokenizer = _reward_model(source)
    texts = []
    for prompt, completion in zip(prompts, completions, strict=True):
        if isinstance(prompt, list) and tokenizer.chat_template:
            texts.append(tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": completion}], tokenize=False))
        else:
            texts.append(f"{text_of(prompt)}\n{completion}")
    scores: list[float] = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=1024)
        with torch.no_grad():
            logits = model(**{k: v.to(model.device) for k, v in enc.items()}).logits
        scores += logits[:, 0].float().cpu().tolist()
    return scores


def _reward_model(source: str):
    if source not in _REWARD_MODELS:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        cuda = torch.cuda.is_available()
        model = AutoModelForSequenceClassification.from_pretrained(source, dtype=torch.bfloat16 if cuda else torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        _REWARD_MODELS[source] = (model.to("cuda" if cuda else "cpu").eval(), tokenizer)
    return _REWARD_MODELS[source]


# ---- generation ---------------------------------------------------------------------------------


def generate(model, tokenizer, prompts: list, max_new_tokens: int, batch_size: int,
             generation: dict[str, Any]) -> tuple[list[str], list[int]]:  # fmt: skip
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
                enc = tokenizer.apply_chat_template(part, add_generation_prompt=True, padding=True, return_dict=True, return_tensors="pt")
            else:
                enc = tokenizer(part, padding=True, return_tensors="pt")
            enc = {k: v.to(model.device) for k, v in enc.items()}
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **settings)
            for row in out[:, enc["input_ids"].shape[1] :].tolist():
                n = next((j for j, t in enumerate(row) if t in stop), len(row))
                texts.append(tokenizer.decode(row[:n], skip_special_tokens=True).strip())
                lengths.append(n)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return texts, lengths


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
    return [None if t is None or b is None else (1.0 if t > b else 0.5 if t == b else 0.0) for t, b in zip(trial, base, strict=True)]


class Judge:
    """Built once per trial; `judge(model, step)` -> the metrics of that evaluation.

    `rows`: the judged held-out rows (prompt and the dataset's other columns)."""

    def __init__(self, settings, rows, tokenizer, *, cache_dir: Path | None, import_paths: list[str],
                 uri: str | None = None, run_id: str | None = None, parent_run_id: str | None = None):  # fmt: skip
        self.settings, self.rows, self.tokenizer = settings, rows, tokenizer
        self.scorers: list[Scorer] = list(settings.scorers)
        self.cache_dir, self.import_paths = cache_dir, import_paths
        self.uri, self.run_id, self.parent_run_id = uri, run_id, parent_run_id
        self.prompts = list(rows["prompt"])
        self.columns = _columns(rows)
        self.base: Judged | None = None
        self.seconds = 0.0

    def judge(self, model) -> Judged:
        answers, lengths = generate(model, self.tokenizer, self.prompts, self.settings.max_new_tokens,
                                    self.settings.batch_size, self.settings.generation)  # fmt: skip
        scores = {}
        for i, s in enumerate(self.scorers):
            raw = call_scorer(s, self.prompts, answers, self.columns, self.import_paths)
            scores[s.name] = _check_scores(f"judge.scorers[{i}]", s, raw, len(answers))
        return Judged(answers, lengths, scores, totals(self.scorers, scores, len(answers)))

    def __call__(self, model, step: int) -> dict[str, float]:
        t0 = time.time()
        if self.base is None:
            self.base = self._base(model)
        judged = self.judge(model)
        wins = outcomes(judged.totals, self.base.totals)
        metrics = judged.metrics(PREFIX)
        win_rate = _mean(wins)
        if win_rate is not None:
            metrics[WIN_RATE] = win_rate
        if self.uri and self.run_id:
            from .tracking import client

            client(self.uri).log_table(self.run_id, data=self.table(judged, wins), artifact_file=f"{TABLE_DIR}/step-{step:06d}.json")
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
        model's (`base`, `base_<scorer>`, `base_score`) and the outcome of each comparison."""
        df = self.frame(judged)
        base = self.frame(self.base).drop(columns=["prompt", "length"])
        df.insert(1, "base", base.pop("answer"))
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
            if path.exists():
                base = Judged(**json.loads(path.read_text()))
            else:
                base = self._judge_base(model)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(dataclasses.asdict(base)))
                os.replace(tmp, path)
            self._log_base(base)  # under the lock: the parent run gets them once
        return base

    def _judge_base(self, model) -> Judged:
        import contextlib

        with model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext():
            return self.judge(model)

    def _log_base(self, base: Judged) -> None:
        if not (self.uri and self.parent_run_id):
            return
        from .tracking import client, log_metrics

        c = client(self.uri)
        if BASE_PREFIX + "score" in c.get_run(self.parent_run_id).data.metrics:
            return
        log_metrics(self.uri, self.parent_run_id, base.metrics(BASE_PREFIX), 0)
        c.log_table(self.parent_run_id, data=self.frame(base), artifact_file=BASE_TABLE)

    def _key(self, model) -> str:
        """Hash of what the base answers and scores depend on."""
        import torch
        import transformers

        from .prepare import model_identity

        parts = {
            "versions": [transformers.__version__, torch.__version__],
            "model": model_identity(model),
            "device": str(model.device),
            "tokenizer": [type(self.tokenizer).__name__, len(self.tokenizer), self.tokenizer.chat_template, self.tokenizer.eos_token],
            "prompts": self.prompts,
            "columns": self.columns,
            "generation": [self.settings.max_new_tokens, self.settings.batch_size, self.settings.generation],
            "scorers": [dataclasses.asdict(s) for s in self.scorers],
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

