"""The shipped preference data: large, real, split, generated deterministically."""

from __future__ import annotations

import json
import subprocess
import sys

from sweep.builtin import BUILTIN_DATASETS
from tests.conftest import REPO


def test_shipped_dataset_is_large_real_and_split():
    rows = {s: [json.loads(line) for line in open(BUILTIN_DATASETS["prefs"] / f"{s}.jsonl")] for s in ("train", "test")}
    assert len(rows["train"]) >= 2000 and len(rows["test"]) >= 200
    prompts = {s: {r["prompt"][0]["content"] for r in rows[s]} for s in rows}
    assert not prompts["train"] & prompts["test"], "eval prompts leak into train"
    for r in rows["train"][:200]:
        assert r["chosen"] != r["rejected"]
        assert r["chosen"][0]["role"] == r["rejected"][0]["role"] == "assistant"
    assert {r["flaw"] for r in rows["train"]} == {"wrong", "rambling"}


def test_dataset_generator_is_deterministic(tmp_path):
    """The script in the repo generates exactly the shipped files (into a folder of its own:
    the shipped ones are never rewritten by a test)."""
    shipped = {p.name: p.read_bytes() for p in BUILTIN_DATASETS["prefs"].glob("*.jsonl")}
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_builtin_dataset.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.jsonl")} == shipped
