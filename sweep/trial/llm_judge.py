"""An LLM as the judge: a local causal LM reads each answer (or the trial's answer beside the
base model's) in a prompt template and writes a verdict, parsed strictly.

- `pairwise` (MT-Bench's pairwise judging, AlpacaEval's baseline comparison): the judge sees
  the trial's answer and the base model's, in both orders. A win in both orders is a win (1),
  a loss in both a loss (0); a tie, or orders that disagree, is a tie (0.5) — position bias
  cancels. The mean is the win rate against the base model.
- `grade` (MT-Bench's single-answer grading): a grade from 1 to 10 per answer; the mean grade.

A verdict that does not follow the template's format (`[[A]]`, `[[B]]`, `[[C]]` for a tie;
`[[7]]` for a grade) is unparseable: the prompt gets no score (None), the count is logged as
`<name>_unparsed` and said in the trial's log, and nothing is guessed. The raw verdicts go to
the per-prompt table.

The length-controlled win rate (`length_controlled_win_rate`) is AlpacaEval 2's idea
(Dubois et al., 2024, arXiv:2404.04475): regress the outcomes on the length difference and
read the win rate where the lengths are equal.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ..builtin import JUDGE_TEMPLATES, builtin_model_path

MODES = ("pairwise", "grade")
SLOTS = {"pairwise": ("question", "answer_a", "answer_b"), "grade": ("question", "answer")}
SLOT = re.compile(r"\{(question|answer_a|answer_b|answer)\}")
VERDICT = {"pairwise": re.compile(r"\[\[([ABC])\]\]"), "grade": re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]")}
GRADES = (1.0, 10.0)

# The builtin templates: `mt-bench` follows MT-Bench's judge prompts (Zheng et al., 2023,
# "Judging LLM-as-a-Judge", pair-v2 and single-v1); `compact` is short enough for a small
# judge's context (builtin:judge is trained on it).
TEMPLATES = {
    "mt-bench": {
        "pairwise": (
            "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
            "assistants to the user question displayed below. Choose the assistant that follows the user's "
            "instructions and answers the user's question better. Avoid any position biases and ensure that "
            "the order in which the responses were presented does not influence your decision. Do not allow "
            "the length of the responses to influence your evaluation. Be as objective as possible. After "
            'providing your explanation, output your final verdict by strictly following this format: "[[A]]" '
            'if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.\n\n'
            "[User Question]\n{question}\n\n"
            "[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
            "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
        ),
        "grade": (
            "Please act as an impartial judge and evaluate the quality of the response provided by an AI "
            "assistant to the user question displayed below. Consider its helpfulness, relevance, accuracy "
            "and level of detail. Be as objective as possible. After providing your explanation, rate the "
            'response on a scale of 1 to 10 by strictly following this format: "[[rating]]", for example: '
            '"Rating: [[5]]".\n\n'
            "[Question]\n{question}\n\n"
            "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
        ),
    },
    "compact": JUDGE_TEMPLATES,
}
BUILTIN_JUDGE_TEMPLATE = "compact"  # builtin:judge's default; other judges default to mt-bench


class TemplateError(ValueError):
    pass


def read_template(template: str | None, mode: str, model: str) -> str:
    """The template text: `builtin:<name>`, a file's path, or None for the judge's default.
    Refused (TemplateError) where a slot the mode needs is missing."""
    if template is None:
        template = "builtin:" + (BUILTIN_JUDGE_TEMPLATE if model == "builtin:judge" else "mt-bench")
    if template.startswith("builtin:"):
        name = template.removeprefix("builtin:")
        if name not in TEMPLATES:
            raise TemplateError(f"unknown builtin template {template!r}; valid: builtin:mt-bench, builtin:compact")
        return TEMPLATES[name][mode]
    path = Path(template).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TemplateError(f"cannot read template {template} ({type(e).__name__})") from None
    present = set(SLOT.findall(text))
    missing = [s for s in SLOTS[mode] if s not in present]
    if missing:
        raise TemplateError(
            f"template {template} lacks the slot(s) {', '.join('{' + s + '}' for s in missing)}; "
            f"a {mode} template has {', '.join('{' + s + '}' for s in SLOTS[mode])}"
        )
    return text


def render(template: str, **slots: str) -> str:
    """The template with its slots filled; other braces in it are left as written."""
    return SLOT.sub(lambda m: slots.get(m.group(1), m.group(0)), template)


def parse_verdict(mode: str, text: str) -> str | float | None:
    """`A`, `B` or `C` (pairwise) or a grade in [1, 10]; None where the text holds no verdict in
    the format, or two different ones."""
    found = set(VERDICT[mode].findall(text))
    if len(found) != 1:
        return None
    (verdict,) = found
    if mode == "grade":
        grade = float(verdict)
        return grade if GRADES[0] <= grade <= GRADES[1] else None
    return verdict


def pairwise_outcome(trial_first: str | None, base_first: str | None) -> float | None:
    """The trial's outcome from the verdict with its answer as A and the one with it as B:
    1 won both, 0 lost both, 0.5 a tie or orders that disagree; None if either is unparseable."""
    if trial_first is None or base_first is None:
        return None
    first = {"A": 1.0, "B": 0.0, "C": 0.5}[trial_first]
    second = {"A": 0.0, "B": 1.0, "C": 0.5}[base_first]
    return first if first == second else 0.5


def length_controlled_win_rate(
    outcomes: list[float | None], lengths: list[int], base_lengths: list[int], iterations: int = 50
) -> float | None:
    """The win rate at equal length: a logistic regression of the outcomes (ties as half a win)
    on tanh(length difference / its standard deviation), read at zero difference — AlpacaEval 2's
    length control for one model against its baseline. Where the lengths or the outcomes do not
    vary there is no length effect to remove: the plain win rate. None without outcomes."""
    rows = [(o, a - b) for o, a, b in zip(outcomes, lengths, base_lengths, strict=True) if o is not None]
    if not rows:
        return None
    ys = [o for o, _ in rows]
    diffs = [d for _, d in rows]
    mean_d = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean_d) ** 2 for d in diffs) / len(diffs))
    win_rate = sum(ys) / len(ys)
    if sd == 0 or len(set(ys)) == 1:
        return win_rate
    xs = [math.tanh(d / sd) for d in diffs]
    # Newton's method on the log-likelihood; a small ridge on the slope keeps it finite where
    # the length alone separates wins from losses.
    b0 = b1 = 0.0
    ridge = 1e-4
    for _ in range(iterations):
        g0 = g1 = h00 = h01 = h11 = 0.0
        for x, y in zip(xs, ys, strict=True):
            p = 1 / (1 + math.exp(-(b0 + b1 * x)))
            w = p * (1 - p)
            g0, g1 = g0 + (y - p), g1 + (y - p) * x
            h00, h01, h11 = h00 + w, h01 + w * x, h11 + w * x * x
        g1 -= ridge * b1
        h11 += ridge
        det = h00 * h11 - h01 * h01
        if det <= 0:
            break
        step0, step1 = (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det
        b0, b1 = b0 + step0, b1 + step1
        if abs(step0) + abs(step1) < 1e-10:
            break
    return 1 / (1 + math.exp(-b0))


# ---- the judge model, kept per worker --------------------------------------------------------

_JUDGES: dict[tuple[str, str], tuple[Any, Any]] = {}


def judge_model(source: str, device: str):
    """The judge (model, tokenizer) on `device`, bf16 on a GPU and fp32 on CPU; loaded once per
    worker and kept for its later trials."""
    key = (source, device)
    if key not in _JUDGES:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = str(builtin_model_path(source.removeprefix("builtin:"))) if source.startswith("builtin:") else source
        cuda = device.startswith("cuda")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if cuda else torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        _JUDGES[key] = (model.to(device).eval(), tokenizer)
    return _JUDGES[key]
