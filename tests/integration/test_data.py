"""Dataset formats read through a real tokenizer: system prompts, prompts over max_length, a plain
tokenizer."""

from __future__ import annotations

import json

from sweep.data import load_preference_data
from sweep.spec.load import DatasetSpec
from tests.conftest import write_jsonl


def _prompt_text(tokenizer, row):
    return tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)


def test_orca_style_with_system_prompts_uses_the_chat_template(tmp_path, tiny_model_path):
    from transformers import AutoTokenizer

    rows = [
        {
            "system": f"You are helper {i}.",
            "question": f"What is {i}+1?",
            "chatgpt": str(i + 1),
            "llama2-13b-chat": "I am not sure.",
        }
        for i in range(30)
    ]
    rows[3]["system"] = ""  # orca has rows without a system prompt
    ds = DatasetSpec(
        path=write_jsonl(tmp_path / "orca.jsonl", rows),
        eval_fraction=0.2,
        columns={"system": "system", "prompt": "question", "chosen": "chatgpt", "rejected": "llama2-13b-chat"},
    )
    data = load_preference_data(ds)
    assert (len(data["train"]), len(data["eval"])) == (24, 6)
    by_question = {r["prompt"][-1]["content"]: r for split in data.values() for r in split}
    row = by_question["What is 5+1?"]
    assert row["prompt"] == [
        {"role": "system", "content": "You are helper 5."},
        {"role": "user", "content": "What is 5+1?"},
    ]
    assert row["chosen"] == [{"role": "assistant", "content": "6"}]
    assert row["rejected"] == [{"role": "assistant", "content": "I am not sure."}]
    assert by_question["What is 3+1?"]["prompt"] == [{"role": "user", "content": "What is 3+1?"}]
    text = _prompt_text(AutoTokenizer.from_pretrained(tiny_model_path), row)
    assert text.startswith("<|im_start|>system\nYou are helper 5.<|im_end|>") and text.endswith(
        "<|im_start|>assistant\n"
    )


def test_some_prompts_over_max_length_are_counted_in_one_warning_not_refused(tmp_path, tiny_model_path):
    from datasets import concatenate_datasets
    from transformers import AutoTokenizer

    from sweep.data import check_lengths

    long_prompt, long_answer = "word " * 80, "yes " * 80
    rows = [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(20)]
    for row in rows[:5]:
        row["prompt"] = long_prompt + row["prompt"]  # prompt alone fills max_length: TRL drops the pair
    for row in rows[5:8]:
        row["chosen"] = long_answer  # fits, but its answer will be cut
    loaded = load_preference_data(DatasetSpec(path=write_jsonl(tmp_path / "mixed.jsonl", rows), eval_fraction=0.1))
    pairs = concatenate_datasets([loaded["train"], loaded["eval"]])  # all 20, as chat messages
    short = pairs.filter(lambda row: len(str(row)) < 300)
    data = {"train": pairs, "eval": short}  # short rows only in eval: nothing to say about them
    said = []
    check_lengths(data, AutoTokenizer.from_pretrained(tiny_model_path), 64, log=said.append)
    assert said == [
        "warning: of 20 train pairs, 5 have prompts of max_length=64 tokens or more and will be dropped, "
        "3 more will be truncated"
    ]


def test_the_driver_reads_a_plain_tokenizer_without_importing_torch(tiny_model_path):
    """A tokenizer that is `tokenizer.json` alone (the builtin's, many hub models') loads as
    AutoTokenizer would load it, without AutoTokenizer's import of torch: the driver checks
    lengths and chat templates before every sweep and trains nothing itself."""
    import subprocess
    import sys

    from transformers import AutoTokenizer

    from tests.conftest import REPO

    probe = (
        "import json, sys\nfrom sweep.trial.model import load_tokenizer\n"
        f"t = load_tokenizer({str(tiny_model_path)!r})\n"
        "m = [{'role': 'user', 'content': 'What is 2+2?'}]\n"
        "print(json.dumps(['torch' in sys.modules, type(t).__name__, t.pad_token,"
        " t.apply_chat_template(m, tokenize=False, add_generation_prompt=True), t('a b c')['input_ids']]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    imported_torch, cls, pad, templated, ids = json.loads(out.stdout.splitlines()[-1])
    auto = AutoTokenizer.from_pretrained(tiny_model_path)
    m = [{"role": "user", "content": "What is 2+2?"}]
    assert not imported_torch
    assert [cls, pad, templated, ids] == [
        type(auto).__name__,
        auto.pad_token,
        auto.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
        auto("a b c")["input_ids"],
    ]
