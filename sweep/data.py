"""Preference data: load a spec's dataset as train/eval splits of prompt/chosen/rejected.

Sources: `builtin:prefs`, a local .jsonl/.json/.parquet/.csv file, a directory written by
`datasets.save_to_disk`, or a hub id (where a hub is reachable). Columns can be renamed in
the spec (`dataset.columns`). Rows may be plain text or conversational (lists of
{role, content} messages); TRL applies the model's chat template to the latter.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from .spec import DatasetSpec, SpecError

REQUIRED_COLUMNS = ("prompt", "chosen", "rejected")
FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def load_preference_data(ds: DatasetSpec):
    """Return a `datasets.DatasetDict` with `train` and `eval` splits holding only prompt/chosen/rejected."""
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
        split = split.rename_columns({src: dst for dst, src in ds.columns.items() if src in split.column_names})
        missing = [c for c in REQUIRED_COLUMNS if c not in split.column_names]
        if missing:
            mapped = {dst: src for dst, src in ds.columns.items()}
            hint = f" (mapped from {', '.join(repr(mapped[m]) for m in missing if m in mapped)})" if any(m in mapped for m in missing) else ""
            raise SpecError(
                "dataset.columns",
                f"{name} split lacks column(s) {', '.join(missing)}{hint}; it has {', '.join(split.column_names)}; "
                "map them with dataset.columns, e.g. {prompt: question, chosen: chatgpt, rejected: llama2-13b-chat}",
            )
        split = split.select_columns(list(REQUIRED_COLUMNS))
        limit = ds.max_train_rows if name == "train" else ds.max_eval_rows
        if limit is not None and len(split) > limit:
            split = split.shuffle(seed=ds.seed).select(range(limit))
        if len(split) == 0:
            raise SpecError("dataset", f"the {name} split of {ds.path} is empty")
        splits[name] = split
    return datasets.DatasetDict(splits)


def _load_source(ds: DatasetSpec):
    import datasets

    if ds.path.startswith("builtin:"):
        from .builtin import BUILTIN_DATASETS

        folder = BUILTIN_DATASETS[ds.path.removeprefix("builtin:")]
        files = {p.stem: str(p) for p in sorted(folder.glob("*.jsonl"))}
        return datasets.load_dataset("json", data_files=files)
    path = Path(ds.path).expanduser()
    if path.is_file():
        fmt = FILE_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise SpecError("dataset.path", f"unsupported file type {path.suffix!r}; use {', '.join(FILE_FORMATS)}")
        if path.stat().st_size == 0:
            raise SpecError("dataset.path", f"{path} is empty")
        if fmt in ("json", "csv"):
            _check_utf8(path)
        try:
            return datasets.load_dataset(fmt, data_files={"train": str(path)})
        except Exception as e:  # a malformed or non-UTF-8 file
            raise SpecError("dataset.path", f"cannot read {path}: {_first_line(e)}") from None
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as e:
            raise SpecError("dataset.path", f"{path} is not a directory saved with datasets.save_to_disk: {_first_line(e)}") from None
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
    if path.is_absolute() or ds.path.startswith((".", "~")) or path.suffix.lower() in FILE_FORMATS:
        raise SpecError("dataset.path", f"file not found: {ds.path}")
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
                raise SpecError("dataset.path", f"{path} is not UTF-8 text (byte {chunk[e.start]:#04x} at offset {offset + e.start})") from None
            offset += len(chunk)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def check_lengths(data, tokenizer, max_length: int | None, log=print) -> None:
    """Warn (with counts) about pairs `max_length` will truncate or drop; refuse a split it empties.

    TRL drops pairs whose prompt alone fills `max_length` (keep_start truncation) and cuts the
    completions of the rest: without this check a too-small max_length trains on nothing, silently.
    """
    if max_length is None:
        return
    for name, split in data.items():
        rows = split.select(range(min(len(split), 20_000)))  # bounded cost on big datasets
        dropped = truncated = 0
        for row in rows:
            prompt, longest = _token_lengths(tokenizer, row)
            dropped += prompt >= max_length
            truncated += prompt < max_length < longest
        if dropped == len(rows):
            raise SpecError(
                "train.max_length",
                f"{max_length} tokens is too short: every {name} pair's prompt is at least that long; raise it",
            )
        if dropped or truncated:
            log(
                f"warning: of {len(rows)} {name} pairs, {dropped} have prompts of max_length={max_length} tokens "
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
