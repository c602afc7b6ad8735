"""Preference data: load a spec's dataset as train/eval splits of prompt/chosen/rejected.

Sources: `builtin:prefs`, a local .jsonl/.json/.parquet/.csv file, a directory written by
`datasets.save_to_disk`, or a hub id (where a hub is reachable). Columns can be renamed in
the spec (`dataset.columns`). Supported layouts, without user code:

    prompt/chosen/rejected     plain text or lists of {role, content} messages
    orca_dpo_pairs             columns: {system: system, prompt: question, chosen: chatgpt, rejected: llama2-13b-chat}
    stack-exchange-paired      columns: {prompt: question, chosen: response_j, rejected: response_k}
    hh-rlhf                    format: transcript (whole chosen/rejected conversations)

Rows are turned into chat messages (system prompt first) so that TRL formats them with the
model's chat template, as the published recipes do; `chat_template: false` keeps raw text.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from .builtin import BUILTIN_DATASETS
from .errors import SpecError
from .spec.schema import DatasetSpec

REQUIRED_COLUMNS = ("prompt", "chosen", "rejected")
FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def load_preference_data(ds: DatasetSpec, log=None, keep_columns: bool = False):
    """Return a `datasets.DatasetDict` with `train` and `eval` splits holding only prompt/chosen/rejected
    (`keep_columns`: and the source's other columns, which judge scorers receive).

    Rows come out conversational (lists of messages, system prompt first where there is one)
    unless `dataset.chat_template` is false; rows with an empty prompt or answer are dropped
    (counted in a warning through `log`).
    """
    import datasets

    source = _load_source(ds)
    if ds.train_split not in source:
        raise SpecError("dataset.train_split", f"split {ds.train_split!r} not found; available: {', '.join(source)}")
    train = source[ds.train_split]
    if ds.eval_split and ds.eval_split in source:
        evaluation = source[ds.eval_split]
    else:
        if len(train) < 2:
            raise SpecError("dataset", f"{ds.path} has {len(train)} row(s): too few to hold out an eval split")
        parts = train.train_test_split(test_size=ds.eval_fraction, seed=ds.seed)
        train, evaluation = parts["train"], parts["test"]

    splits = {}
    for name, split in (("train", train), ("eval", evaluation)):
        split = split.rename_columns(
            {src: dst for dst, src in ds.columns.items() if src in split.column_names and src != dst}
        )
        needed = ("chosen", "rejected") if ds.format == "transcript" else REQUIRED_COLUMNS
        _check_columns(ds, name, split, needed + (("system",) if "system" in ds.columns else ()))
        limit = ds.max_train_rows if name == "train" else ds.max_eval_rows
        if limit is not None and len(split) > limit:
            split = split.shuffle(seed=ds.seed).select(range(limit))
        keep = [c for c in (*REQUIRED_COLUMNS, "system") if c in split.column_names]
        split = (split if keep_columns else split.select_columns(keep)).map(
            _formatter(ds, name), remove_columns=keep, with_indices=True
        )
        before = len(split)
        split = split.filter(_complete)
        if len(split) == 0:
            raise SpecError(
                "dataset",
                f"the {name} split of {ds.path} is empty"
                + (" (every row has an empty prompt or answer)" if before else ""),
            )
        if before > len(split) and log is not None:
            log(
                f"warning: dropped {before - len(split)} of {before} {name} rows with an empty prompt, chosen or rejected answer"
            )
        splits[name] = split
    return datasets.DatasetDict(splits)


def _check_columns(ds: DatasetSpec, name: str, split, needed) -> None:
    missing = [c for c in needed if c not in split.column_names]
    if missing:
        mapped = dict(ds.columns)
        hint = (
            f" (mapped from {', '.join(repr(mapped[m]) for m in missing if m in mapped)})"
            if any(m in mapped for m in missing)
            else ""
        )
        raise SpecError(
            "dataset.columns",
            f"{name} split lacks column(s) {', '.join(missing)}{hint}; it has {', '.join(split.column_names)}; "
            "map them with dataset.columns, e.g. {prompt: question, chosen: chatgpt, rejected: llama2-13b-chat}",
        )


def _formatter(ds: DatasetSpec, split: str):
    """The (row, index) -> {prompt, chosen, rejected} function for the spec's format and chat
    settings; a value that is neither text nor a list of {role, content} messages is a
    SpecError naming the row."""

    def format_row(row, i):
        for column in (*REQUIRED_COLUMNS, "system"):
            if column in row and not _text_or_messages(row[column]):
                source = ds.columns.get(column, column)
                raise SpecError(
                    f"dataset.columns.{column}" if column in ds.columns else "dataset",
                    f"{split} row {i}: column {source!r} holds {type(row[column]).__name__} "
                    f"{_clip(row[column])}; it must hold text or a list of {{role, content}} messages",
                )
        if ds.format == "transcript":
            prompt, chosen, rejected = split_transcripts(row["chosen"], row["rejected"])
        else:
            prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
        if ds.chat_template:
            system = row.get("system") or ds.system_prompt
            prompt = _as_messages(prompt, "user")
            if system and not (prompt and prompt[0]["role"] == "system"):
                prompt = [{"role": "system", "content": system}] + prompt
            chosen, rejected = _as_messages(chosen, "assistant"), _as_messages(rejected, "assistant")
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}

    return format_row


def _text_or_messages(value) -> bool:
    if value is None or isinstance(value, str):
        return True
    return isinstance(value, list) and all(
        isinstance(m, dict)
        and isinstance(m.get("role"), str)
        and "content" in m
        and isinstance(m["content"], (str, type(None)))
        for m in value
    )


def _clip(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _as_messages(value, role: str) -> list[dict]:
    if isinstance(value, list):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    return [{"role": role, "content": value or ""}]


def _complete(row) -> bool:
    def text(v):
        return "".join(m.get("content") or "" for m in v) if isinstance(v, list) else (v or "")

    return all(text(row[c]).strip() for c in REQUIRED_COLUMNS)


TURN = re.compile(r"\n\n(Human|Assistant): ?")


def split_transcripts(chosen, rejected):
    """(prompt, chosen answer, rejected answer) from two whole conversations (hh-rlhf style).

    Text transcripts ("\n\nHuman: ...\n\nAssistant: ...") become message lists; the turns
    both share are the prompt, the rest of each is its answer."""
    chosen, rejected = _transcript_messages(chosen), _transcript_messages(rejected)
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    # The answer starts at the last assistant turn that differs; a shared prefix ends on a user turn.
    while shared > 0 and chosen[shared]["role"] != "assistant":
        shared -= 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _transcript_messages(value) -> list[dict]:
    if isinstance(value, list):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    parts = TURN.split(value if value.startswith("\n\n") else "\n\n" + value.lstrip("\n"))
    # parts: [before, role, text, role, text, ...]
    return [
        {"role": "user" if role == "Human" else "assistant", "content": text.strip()}
        for role, text in zip(parts[1::2], parts[2::2])
    ]


def check_source(ds: DatasetSpec) -> Path | None:
    """The local file `ds.path` names, checked without reading it (None: builtin, a saved
    directory or a hub id). A missing file, an unsupported type or an empty file is a
    SpecError: `run` checks this before Ray starts."""
    if ds.path.startswith("builtin:"):
        return None
    path = Path(ds.path).expanduser()
    if path.is_file():
        if path.suffix.lower() not in FILE_FORMATS:
            raise SpecError("dataset.path", f"unsupported file type {path.suffix!r}; use {', '.join(FILE_FORMATS)}")
        if path.stat().st_size == 0:
            raise SpecError("dataset.path", f"{path} is empty")
        return path
    if path.is_dir():
        return None
    if path.is_absolute() or ds.path.startswith((".", "~")) or path.suffix.lower() in FILE_FORMATS:
        raise SpecError("dataset.path", f"file not found: {ds.path}")
    return None  # a hub id


def _load_source(ds: DatasetSpec):
    import datasets

    file = check_source(ds)
    if ds.path.startswith("builtin:"):
        folder = BUILTIN_DATASETS[ds.path.removeprefix("builtin:")]
        files = {p.stem: str(p) for p in sorted(folder.glob("*.jsonl"))}
        return datasets.load_dataset("json", data_files=files)
    if file is not None:
        fmt = FILE_FORMATS[file.suffix.lower()]
        if fmt in ("json", "csv"):
            _check_utf8(file)
        try:
            return datasets.load_dataset(fmt, data_files={"train": str(file)})
        except Exception as e:  # a malformed or non-UTF-8 file
            raise SpecError("dataset.path", f"cannot read {file}: {_first_line(e)}") from None
    path = Path(ds.path).expanduser()
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as e:
            raise SpecError(
                "dataset.path", f"{path} is not a directory saved with datasets.save_to_disk: {_first_line(e)}"
            ) from None
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
    try:  # a hub id
        return datasets.load_dataset(ds.path)
    except Exception as e:
        raise SpecError("dataset.path", f"cannot load {ds.path!r} from the hub: {_first_line(e)}") from None


def _check_utf8(path: Path) -> None:
    """Text formats must be UTF-8; pyarrow would otherwise pass invalid bytes through silently."""
    offset = 0
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                raise SpecError(
                    "dataset.path",
                    f"{path} is not UTF-8 text (byte {chunk[e.start]:#04x} at offset {offset + e.start})",
                ) from None
            offset += len(chunk)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


LENGTH_SAMPLE = 1000  # pairs per split the driver tokenises to check max_length; trials count the rows they read


def check_lengths(data, tokenizer, max_length: int | None, log=print) -> None:
    """Warn (with counts) about pairs `max_length` will truncate or drop; refuse a split it empties.

    TRL drops pairs whose prompt alone fills `max_length` (keep_start truncation) and cuts the
    completions of the rest: without this check a too-small max_length trains on nothing, silently.
    A split of more than LENGTH_SAMPLE pairs is checked on a seeded sample of that many (the
    warning says so): its cost does not grow with the dataset.
    """
    if max_length is None:
        return
    for name, split in data.items():
        sampled = len(split) > LENGTH_SAMPLE
        rows = split.shuffle(seed=0).select(range(LENGTH_SAMPLE)) if sampled else split
        dropped = truncated = 0
        for row in rows:
            prompt, longest = _token_lengths(tokenizer, row)
            dropped += prompt >= max_length
            truncated += prompt < max_length < longest
        if dropped == len(rows):
            raise SpecError(
                "train.max_length",
                f"{max_length} tokens is too short: every {name} pair's prompt"
                + (f" of {len(rows)} sampled" if sampled else "")
                + " is at least that long; raise it",
            )
        if dropped or truncated:
            of = f"{len(rows)} sampled {name} pairs (of {len(split)})" if sampled else f"{len(rows)} {name} pairs"
            log(
                f"warning: of {of}, {dropped} have prompts of max_length={max_length} tokens "
                f"or more and will be dropped, {truncated} more will be truncated"
            )


def _token_lengths(tokenizer, row) -> tuple[int, int]:
    """(prompt tokens, prompt + longer completion tokens) as TRL will tokenize them."""
    if isinstance(row["prompt"], list):  # conversational: the chat template applies

        def n(messages, **kw):
            return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kw)["input_ids"])

        prompt = n(row["prompt"], add_generation_prompt=True)
        return prompt, max(n(row["prompt"] + row[k]) for k in ("chosen", "rejected"))
    prompt = len(tokenizer(row["prompt"])["input_ids"])
    return prompt, max(len(tokenizer(row["prompt"] + row[k])["input_ids"]) for k in ("chosen", "rejected"))
