"""Scorers of generations, in TRL GRPO's `reward_funcs` convention (judge.py uses them):

- `builtin:<name>`: scorers shipped here (BUILTIN_SCORERS);
- `module:function`: a callable taking `prompts`, `completions` and the dataset's other
  columns as keyword arguments, returning one float (or None: not applicable) per completion;
  completions are message lists where prompts are, as in GRPO;
- `llm:<model>`: a causal LM as the judge (llm_judge.py), comparing each answer with the base
  model's (`mode: pairwise`, the default) or grading it (`mode: grade`);
- anything else: a reward model, a local directory or hub id of a sequence-classification
  model with one label, loaded once per worker and kept there.

Each may be `{builtin|function|reward_model|llm: ..., weight: w, name: n}`; `llm` also takes
`mode`, `template`, `device` and `max_new_tokens`. What can be checked
before anything trains is checked here: the form (`parse_scorer`), imports, signatures and
classification heads (`check_scorer`), and what a callable returns on real rows (`probe`).
"""

from __future__ import annotations

import inspect
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..builtin import BUILTIN_MODELS
from ..errors import SpecError
from .llm_judge import MODES, TemplateError, read_template

FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


PREFIX = "eval_judge/"  # a judged trial's metrics: eval_judge/<scorer name>, and the judge's own TOTALS
TOTALS = ("score", "win_rate", "length")  # the judge's own metrics; no scorer may take these names


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


KINDS = ("builtin", "function", "reward_model", "llm")
LLM_OPTIONS = ("mode", "template", "device", "max_new_tokens")


@dataclass(frozen=True)
class Scorer:
    kind: str  # one of KINDS
    source: str  # builtin name, "module:function", or a model path / hub id
    name: str  # the metric is eval_judge/<name>
    weight: float = 1.0
    # an LLM judge's (llm_judge.py): pairwise | grade, its template, where it runs, its verdict's length
    mode: str = "pairwise"
    template: str | None = None
    device: str | None = None
    max_new_tokens: int = 512


def parse_scorer(where: str, raw: Any) -> Scorer:
    """A spec entry (`builtin:verifiable`, `pkg.mod:fn`, `llm:<model>`, a model path, or a mapping
    with one of KINDS and optional `weight`, `name`, and an LLM judge's options) as a Scorer;
    checks the form only."""
    weight, name, options = 1.0, None, {}
    if isinstance(raw, dict):
        kinds = [k for k in KINDS if k in raw]
        allowed = {*KINDS, "weight", "name", *(LLM_OPTIONS if kinds == ["llm"] else ())}
        extra = set(raw) - allowed
        if len(kinds) != 1 or extra:
            raise ScorerError(
                where,
                f"needs exactly one of {', '.join(KINDS)} (and optional weight, name; an llm judge also "
                f"{', '.join(LLM_OPTIONS)}); got {sorted(raw)}",
            )
        kind, source = kinds[0], raw[kinds[0]]
        weight, name = raw.get("weight", 1.0), raw.get("name")
        options = {k: raw[k] for k in LLM_OPTIONS if k in raw}
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ScorerError(f"{where}.weight", f"must be a number, got {weight!r}")
        if name is not None and not (isinstance(name, str) and re.fullmatch(r"[\w.-]+", name)):
            raise ScorerError(f"{where}.name", f"must be letters, digits, '_', '-' or '.', got {name!r}")
        if kind == "builtin" and isinstance(source, str) and not source.startswith("builtin:"):
            source = f"builtin:{source}"
    else:
        source = raw
        kind = None
        if isinstance(raw, str) and raw.startswith("llm:"):
            kind, source = "llm", raw.removeprefix("llm:")
    if not isinstance(source, str) or not source.strip():
        raise ScorerError(
            where, f"must be builtin:<name>, module:function, llm:<model> or a reward model path, got {source!r}"
        )
    if kind == "llm":
        return _llm_scorer(where, source, weight, name, options)
    if source.startswith("builtin:"):
        kind, source = "builtin", source.removeprefix("builtin:")
        if source not in BUILTIN_SCORERS:
            raise ScorerError(
                where, f"unknown builtin scorer {source!r}; valid: {', '.join(f'builtin:{b}' for b in BUILTIN_SCORERS)}"
            )
    elif kind == "function" or (kind is None and FUNCTION.match(source) and not Path(source).exists()):
        kind = "function"
        if not FUNCTION.match(source):
            raise ScorerError(where, f"a function scorer is module:function (e.g. my_scorers:brevity), got {source!r}")
    else:
        kind = "reward_model"
    if name is None:
        name = (
            source
            if kind == "builtin"
            else source.split(":")[1]
            if kind == "function"
            else Path(source.rstrip("/")).name
        )
    return Scorer(kind, source, name, float(weight))


def _llm_scorer(where: str, source: str, weight: float, name: str | None, options: dict) -> Scorer:
    mode = options.get("mode", "pairwise")
    if mode not in MODES:
        raise ScorerError(f"{where}.mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    for key in ("template", "device"):
        if key in options and not (isinstance(options[key], str) and options[key].strip()):
            raise ScorerError(f"{where}.{key}", f"must be a non-empty string, got {options[key]!r}")
    default_tokens = 32 if source == "builtin:judge" else 512  # builtin:judge writes a line of reasons
    tokens = options.get("max_new_tokens", default_tokens)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ScorerError(f"{where}.max_new_tokens", f"must be a whole number >= 1, got {tokens!r}")
    if name is None:
        name = "llm_" + ("judge" if source.startswith("builtin:") else Path(source.rstrip("/")).name)
    return Scorer("llm", source, name, float(weight), mode, options.get("template"), options.get("device"), tokens)


def check_scorer(where: str, scorer: Scorer, import_paths: list[str]) -> None:
    """What can be known before anything trains: the callable imports and takes `prompts` and
    `completions`; a reward model is a sequence classifier with one label."""
    if scorer.kind == "function":
        params = keyword_names(load_function(scorer.source, import_paths, where))
        if params is not None:  # None: it takes any keyword (or cannot be inspected: the probe judges it)
            missing = [a for a in ("prompts", "completions") if a not in params]
            if missing:
                raise ScorerError(
                    where,
                    f"{scorer.source} must take prompts and completions as keyword arguments "
                    f"(as GRPO's reward functions do: def f(prompts, completions, **kwargs)); it lacks {', '.join(missing)}",
                )
    elif scorer.kind == "reward_model":
        config = _reward_model_config(where, scorer.source)
        if config is None:
            return  # a hub id not in the local cache: checked when a worker loads it
        archs = config.get("architectures") or []
        if not isinstance(archs, list) or not any(str(a).endswith("ForSequenceClassification") for a in archs):
            raise ScorerError(
                where,
                f"{scorer.source} is not a sequence-classification (reward) model: its architectures "
                f"are {archs or 'not given'}; a reward model is an AutoModelForSequenceClassification with one label",
            )
        id2label = config.get("id2label")
        labels = len(id2label) if isinstance(id2label, dict) and id2label else config.get("num_labels", 2)
        if labels != 1:
            raise ScorerError(where, f"{scorer.source} has {labels} labels; a reward model has one (num_labels=1)")
    elif scorer.kind == "llm":
        check_llm_judge(where, scorer)


def check_llm_judge(where: str, scorer: Scorer) -> None:
    """An LLM judge is a builtin model or a causal LM (a directory or a hub id), and its
    template has the slots its mode fills."""
    if scorer.source.startswith("builtin:"):
        if scorer.source.removeprefix("builtin:") not in BUILTIN_MODELS:
            raise ScorerError(
                where,
                f"unknown builtin judge {scorer.source!r}; valid: {', '.join(f'builtin:{m}' for m in BUILTIN_MODELS)}",
            )
    else:
        config = _reward_model_config(where, scorer.source, "judge model")
        archs = (config or {}).get("architectures") or []
        if config is not None and not any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
            raise ScorerError(
                where,
                f"{scorer.source} is not a causal language model (its architectures are {archs or 'not given'}); "
                "an llm judge writes its verdict: an AutoModelForCausalLM",
            )
    try:
        read_template(scorer.template, scorer.mode, scorer.source)
    except TemplateError as e:
        raise ScorerError(f"{where}.template", str(e)) from None


def check_functions(scorers: list[Scorer], import_paths: list[str]) -> None:
    """Import each `module:function` scorer (its module's code runs) and check its keywords:
    what `run` does before anything trains, and `plan --import-scorers` on request; validating
    a spec never runs user code. A bad one is a SpecError naming it."""
    for i, scorer in enumerate(scorers):
        if scorer.kind == "function":
            try:
                check_scorer(f"judge.scorers[{i}]", scorer, import_paths)
            except ScorerError as e:
                raise SpecError(e.where, str(e)) from None


def load_function(source: str, import_paths: list[str], where: str = "judge.scorers"):
    import importlib

    module_name, attr = source.split(":")
    for path in import_paths:  # after the installed packages: a file beside the spec never shadows one
        if path not in sys.path:
            sys.path.append(path)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or the module's own error as it imports
        raise ScorerError(
            where,
            f"cannot import {module_name!r} ({type(e).__name__}: {e}); it is looked for in "
            f"{', '.join(import_paths) or 'sys.path'}",
        ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ScorerError(where, f"module {module_name!r} has no function {attr!r}")
    return fn


def _reward_model_config(where: str, source: str, what: str = "reward model") -> dict | None:
    """A local model's config.json, or a hub id's from the local cache (None where not cached)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ScorerError(where, f"{source} is a directory without config.json: not a model")
        return _config_mapping(where, source, path / "config.json")
    if path.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ScorerError(where, f"{what} {source!r}: no such directory, and not a hub id (org/name)")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, "config.json")
    return _config_mapping(where, source, Path(cached)) if isinstance(cached, str) else None  # else: unreachable_models


def _config_mapping(where: str, source: str, file: Path) -> dict:
    """A model's config.json as a mapping, or a ScorerError saying why it is not one."""
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # unreadable, not UTF-8, not JSON
        raise ScorerError(where, f"{source}: its config.json is not readable JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise ScorerError(where, f"{source}: its config.json holds a {type(config).__name__}, not a model's config")
    return config


def probe(scorers: list[Scorer], rows, import_paths: list[str]) -> None:
    """Call each builtin and function scorer on the first held-out rows, with their chosen
    answers as completions: a scorer that raises or returns something other than one number
    (or None) per completion is refused before anything trains."""
    sample = rows.select(range(min(2, len(rows))))
    for i, scorer in enumerate(scorers):
        if scorer.kind in ("reward_model", "llm"):  # models: checked as they load
            continue
        where = f"judge.scorers[{i}]"
        try:
            chosen = [text_of(c) for c in sample["chosen"]]
            scores = call_scorer(scorer, list(sample["prompt"]), chosen, columns_of(sample), import_paths)
        except ScorerError:
            raise
        except Exception as e:
            raise ScorerError(
                where,
                f"{scorer.source} raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                "when called on the first held-out rows",
            ) from None
        check_scores(where, scorer, scores, len(sample))


def check_scores(where: str, scorer: Scorer, scores: Any, n: int) -> list[float | None]:
    if not isinstance(scores, (list, tuple)) or len(scores) != n:
        raise ScorerError(
            where,
            f"{scorer.source} must return a list of {n} scores (one per completion), got {type(scores).__name__}"
            + (f" of {len(scores)}" if isinstance(scores, (list, tuple)) else ""),
        )
    out = []
    for s in scores:
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float))):
            try:  # numpy and torch scalars
                s = float(s)
            except (TypeError, ValueError):
                raise ScorerError(
                    where, f"{scorer.source} returned a non-numeric score {s!r}; scores are floats or None"
                ) from None
        out.append(None if s is None or not math.isfinite(float(s)) else float(s))
    return out


def columns_of(rows) -> dict[str, list]:
    """The dataset's other columns, as GRPO passes them to reward functions."""
    return {c: list(rows[c]) for c in rows.column_names if c not in ("prompt", "completion")}


def call_scorer(
    scorer: Scorer,
    prompts: list,
    completions: list[str],
    columns: dict[str, list],
    import_paths: list[str],
    device: str | None = None,
) -> Any:
    """`scorer`'s raw scores of `completions`; a reward model runs on `device` (the judged
    model's; None: a GPU where torch sees one)."""
    conversational = bool(prompts) and isinstance(prompts[0], list)
    given = [[{"role": "assistant", "content": c}] for c in completions] if conversational else list(completions)
    if scorer.kind == "reward_model":
        return reward_model_scores(scorer.source, prompts, completions, device=device)
    fn = BUILTIN_SCORERS[scorer.source] if scorer.kind == "builtin" else load_function(scorer.source, import_paths)
    kwargs = {"prompts": prompts, "completions": given, **columns}
    params = keyword_names(fn)
    if params is not None:
        kwargs = {k: v for k, v in kwargs.items() if k in params}  # only what it names
    return fn(**kwargs)


def keyword_names(fn) -> set[str] | None:
    """The argument names `fn` takes; None where it takes any keyword (`**kwargs`) or has no
    signature to read (a C callable)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    return None if any(p.kind is p.VAR_KEYWORD for p in params.values()) else set(params)


# ---- reward models, kept warm per worker ------------------------------------------------------

_REWARD_MODELS: dict[tuple[str, str], tuple[Any, Any]] = {}


def reward_model_scores(
    source: str, prompts: list, completions: list[str], batch_size: int = 16, device: str | None = None
) -> list[float]:
    """The reward model's score (its single logit) of each prompt + completion, formatted with
    its own chat template where it has one."""
    import torch

    model, tokenizer = _reward_model(source, device or ("cuda" if torch.cuda.is_available() else "cpu"))
    texts = []
    for prompt, completion in zip(prompts, completions, strict=True):
        if isinstance(prompt, list) and tokenizer.chat_template:
            texts.append(
                tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": completion}], tokenize=False)
            )
        else:
            texts.append(f"{text_of(prompt)}\n{completion}")
    scores: list[float] = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=1024)
        with torch.no_grad():
            logits = model(**{k: v.to(model.device) for k, v in enc.items()}).logits
        scores += logits[:, 0].float().cpu().tolist()
    return scores


def _reward_model(source: str, device: str):
    """The reward model on `device`: bf16 on a GPU, fp32 on CPU; kept for the worker's later
    trials. Its memory counts in the trial's `gpu/peak_*` (it loads at the first evaluation)."""
    key = (source, device)
    if key not in _REWARD_MODELS:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        cuda = device.startswith("cuda")
        model = AutoModelForSequenceClassification.from_pretrained(
            source, dtype=torch.bfloat16 if cuda else torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(source)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        _REWARD_MODELS[key] = (model.to(device).eval(), tokenizer)
    return _REWARD_MODELS[key]
