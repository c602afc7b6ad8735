"""Dataset formats the field uses, loaded without user code into chat-formatted pairs (no model)."""

from __future__ import annotations

import re

import pytest

from sweep.data import check_source, load_preference_data, split_transcripts
from sweep.spec.load import DatasetSpec, SpecError, parse_spec
from tests.conftest import write_jsonl


def test_a_data_path_is_checked_without_reading_it(tmp_path):
    """What `run` refuses before Ray starts: a missing file, an empty one, an unsupported type;
    a hub id, a saved directory and the builtin set are left to the loader."""
    (tmp_path / "ok.jsonl").write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    assert check_source(DatasetSpec(path=str(tmp_path / "ok.jsonl"))) == tmp_path / "ok.jsonl"
    for path in ("Intel/orca_dpo_pairs", str(tmp_path), "builtin:prefs"):
        assert check_source(DatasetSpec(path=path)) is None
    for path, words in (
        (tmp_path / "gone.jsonl", "file not found"),
        ("./data/prefs.parquet", "file not found"),
        (tmp_path / "empty.csv", "is empty"),
        (tmp_path / "notes.txt", "unsupported file type '.txt'; use .jsonl, .json, .parquet, .csv"),
    ):
        with pytest.raises(SpecError, match="^dataset.path: ") as e:
            check_source(DatasetSpec(path=str(path)))
        assert words in str(e.value)


def test_stack_exchange_style_with_a_spec_system_prompt(tmp_path):
    rows = [
        {"qid": i, "question": f"How do I sort list {i}?", "response_j": "Use sorted().", "response_k": "You can't."}
        for i in range(10)
    ]
    ds = DatasetSpec(
        path=write_jsonl(tmp_path / "se.jsonl", rows),
        eval_fraction=0.2,
        system_prompt="Answer briefly.",
        columns={"prompt": "question", "chosen": "response_j", "rejected": "response_k"},
    )
    row = load_preference_data(ds)["train"][0]
    assert row["prompt"][0] == {"role": "system", "content": "Answer briefly."}
    assert row["prompt"][1]["content"].startswith("How do I sort list")
    assert row["chosen"][0]["content"] == "Use sorted()." and row["rejected"][0]["content"] == "You can't."


def test_hh_rlhf_transcripts_share_their_prompt(tmp_path):
    chosen = "\n\nHuman: What is 2+2?\n\nAssistant: 4\n\nHuman: And 3+3?\n\nAssistant: 6."
    rejected = "\n\nHuman: What is 2+2?\n\nAssistant: 4\n\nHuman: And 3+3?\n\nAssistant: I won't say."
    prompt, good, bad = split_transcripts(chosen, rejected)
    assert [m["role"] for m in prompt] == ["user", "assistant", "user"] and prompt[2]["content"] == "And 3+3?"
    assert good == [{"role": "assistant", "content": "6."}] and bad == [
        {"role": "assistant", "content": "I won't say."}
    ]

    rows = [{"chosen": chosen, "rejected": rejected}] * 8
    ds = DatasetSpec(path=write_jsonl(tmp_path / "hh.jsonl", rows), format="transcript", eval_fraction=0.25)
    row = load_preference_data(ds)["eval"][0]
    assert row["prompt"] == prompt and row["chosen"] == good and row["rejected"] == bad


def test_message_list_transcripts_like_dpo_mix(tmp_path):
    def convo(answer):
        return [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": answer}]

    rows = [{"chosen": convo("Blue."), "rejected": convo("Seven."), "rating_chosen": 5}] * 6
    ds = DatasetSpec(path=write_jsonl(tmp_path / "mix.jsonl", rows), format="transcript", eval_fraction=0.5)
    row = load_preference_data(ds)["train"][0]
    assert row["prompt"] == [{"role": "user", "content": "Name a colour."}]
    assert row["chosen"][0]["content"] == "Blue." and row["rejected"][0]["content"] == "Seven."


@pytest.mark.parametrize("fmt", ["parquet", "csv", "saved"])
def test_file_types_splits_limits_and_raw_text(tmp_path, fmt):
    import datasets

    table = datasets.Dataset.from_list([{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(40)])
    held = datasets.Dataset.from_list([{"prompt": f"t{i}", "chosen": "yes", "rejected": "no"} for i in range(10)])
    if fmt == "saved":
        path = tmp_path / "saved"
        datasets.DatasetDict({"train": table, "validation": held}).save_to_disk(str(path))
        ds = DatasetSpec(path=str(path), eval_split="validation", max_train_rows=25, chat_template=False)
        data = load_preference_data(ds)
        assert {r["prompt"] for r in data["eval"]} == {f"t{i}" for i in range(10)}  # the named split
    else:
        path = tmp_path / f"data.{fmt}"
        getattr(table, f"to_{fmt}")(str(path))
        ds = DatasetSpec(path=str(path), eval_fraction=0.25, max_train_rows=25, seed=3, chat_template=False)
        data = load_preference_data(ds)
        assert len(data["eval"]) == 10 and not {r["prompt"] for r in data["eval"]} & {
            r["prompt"] for r in data["train"]
        }
        assert load_preference_data(ds)["train"]["prompt"] == data["train"]["prompt"]  # the seed fixes the split
    assert len(data["train"]) == 25 and data["train"][0]["chosen"] == "yes"  # raw text kept


def test_empty_rows_are_dropped_with_counts_and_an_all_empty_split_is_an_error(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": "" if i % 4 == 0 else "yes", "rejected": "no"} for i in range(40)]
    ds = DatasetSpec(path=write_jsonl(tmp_path / "holes.jsonl", rows), eval_fraction=0.25)
    lines = []
    data = load_preference_data(ds, log=lines.append)
    assert len(data["train"]) + len(data["eval"]) == 30
    assert any(line.startswith("warning: dropped") and "train rows with an empty" in line for line in lines), lines

    empty = [{"prompt": "q", "chosen": " ", "rejected": "no"}] * 8
    with pytest.raises(SpecError, match="every row has an empty prompt or answer") as err:
        load_preference_data(DatasetSpec(path=write_jsonl(tmp_path / "empty.jsonl", empty)))
    assert err.value.field == "dataset"


@pytest.mark.parametrize(
    "bad, column, holds",
    [
        ({"prompt": 5}, "prompt", "int 5"),
        ({"chosen": {"text": "a"}}, "chosen", "dict {'text': 'a'}"),
        ({"rejected": [1, 2]}, "rejected", "list [1, 2]"),
        ({"prompt": [{"role": "user", "text": "hi"}]}, "prompt", "list [{'role': 'user', 'text': 'hi'}]"),
    ],
)
def test_a_row_that_is_neither_text_nor_messages_names_its_row(tmp_path, bad, column, holds):
    """Any column the layout reads holds text or {role, content} messages: another type, in any
    row, is one SpecError naming the row and what it holds (it was a TypeError or KeyError)."""
    rows = [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(12)]
    rows = [{**row, **bad} if i >= 10 else row for i, row in enumerate(rows)]  # late rows: all rows are checked
    spec = DatasetSpec(path=write_jsonl(tmp_path / "odd.jsonl", rows), eval_fraction=0.1, seed=0)
    with pytest.raises(SpecError) as e:
        load_preference_data(spec)
    assert e.value.field == "dataset"
    assert re.fullmatch(
        rf"(train|eval) row \d+: column '{column}' holds {re.escape(holds)}; it must hold text or a list of "
        r"\{role, content\} messages",
        e.value.message,
    ), e.value.message


def test_a_mapped_column_is_named_by_a_string():
    with pytest.raises(SpecError, match=r"dataset.columns.prompt: must be a valid string, got int 5"):
        parse_spec({"name": "x", "dataset": {"columns": {"prompt": 5}}})
