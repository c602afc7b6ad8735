"""Checks a sweep makes once, in the driver, before any trial: the data loads and fits
`max_length`, the model and its tokenizer resolve, the judge's scorers work on held-out rows.
Bad input fails here (SpecError, exit 2) before anything is written."""

from __future__ import annotations

from ..data import check_lengths, load_preference_data
from ..errors import SpecError
from ..record import dataset_inputs
from ..spec.axes import resolved_section
from ..spec.load import SweepSpec
from ..trial import judge, scorers
from ..trial.model import load_tokenizer, resolve_model_path


def prepare(spec: SweepSpec, points: list[dict], log):
    """Once per sweep, in the driver, before any trial: bad data fails here (SpecError, exit 2)
    before anything is written, and no two trials race to build the builtin model.
    Returns (the model's path, the data as trials will load it, described for the record)."""
    data = load_preference_data(spec.dataset, log=log, keep_columns=bool(spec.judge.prompts))
    log(f"data: {len(data['train'])} train / {len(data['eval'])} eval pairs")
    if spec.judge.prompts:
        check_judge(spec, data["eval"], log)
    model_path = resolve_model_path(spec.model, log=log)
    tokenizer = load_tokenizer(model_path)
    if isinstance(data["train"][0]["prompt"], list) and not tokenizer.chat_template:
        raise SpecError(
            "dataset.chat_template",
            f"{spec.model}'s tokenizer has no chat template to format "
            "conversational rows; set dataset.chat_template: false to train on raw text",
        )
    max_lengths = [resolved_section(spec, "train", p).get("max_length", 1024) for p in points]
    check_lengths(data, tokenizer, min((m for m in max_lengths if m), default=None), log=log)
    return model_path, dataset_inputs.describe(spec.dataset, data)


def check_judge(spec: SweepSpec, held_out, log) -> None:
    """The scorers, called on the first held-out rows: one that fails is a spec error, before
    anything trains."""
    rows = judge.held_out_rows(spec, held_out)
    if len(rows) < spec.judge.prompts:
        log(
            f"warning: judge.prompts is {spec.judge.prompts} but the eval split has {len(rows)} rows; judging {len(rows)}"
        )
    scorers.check_functions(spec.judge.scorers, spec.import_paths())
    try:
        scorers.probe(spec.judge.scorers, rows, spec.import_paths())
    except scorers.ScorerError as e:
        raise SpecError(e.where, str(e)) from None
