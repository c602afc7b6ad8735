"""The embedded model: a tiny chat model built offline (and SFT'd), cached and deterministic."""

from __future__ import annotations

import json

import torch

from sweep.builtin import BUILTIN_DATASETS, RECIPE


def test_builtin_model_loads_with_auto_classes_and_chats(tiny_model_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == RECIPE["num_hidden_layers"]
    assert len(tok) <= RECIPE["vocab_size"] and tok.padding_side == "left"
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Say the first word of: cat pear owl"}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    assert tok.decode(ids["input_ids"][0]).endswith("<|im_start|>assistant\n")
    out = model.generate(**ids, max_new_tokens=24, do_sample=False)
    answer = tok.decode(out[0][ids["input_ids"].shape[1] :])
    # SFT taught it the task and the format: the answer first (maybe hedged), then end of turn.
    assert answer.startswith("cat") and answer.endswith("<|im_end|>"), answer


def test_builtin_model_was_fine_tuned_on_chosen_answers(tiny_model_path):
    """SFT -> DPO: the built model fits held-out chosen answers far better than a fresh init."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    sft = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    torch.manual_seed(0)
    fresh = type(sft)(sft.config)
    rows = [json.loads(line) for line in open(BUILTIN_DATASETS["prefs"] / "test.jsonl")][:64]

    def nll(model):
        total, count = 0.0, 0
        for r in rows:
            prompt = tok.apply_chat_template(r["prompt"], add_generation_prompt=True, return_dict=True)["input_ids"]
            full = tok.apply_chat_template(r["prompt"] + r["chosen"], return_dict=True)["input_ids"]
            ids = torch.tensor([full])
            with torch.no_grad():
                logits = model(ids).logits[0, :-1]
            logp = torch.log_softmax(logits, -1)[torch.arange(len(full) - 1), ids[0, 1:]]
            total -= logp[len(prompt) - 1 :].sum().item()
            count += len(full) - len(prompt)
        return total / count

    assert nll(sft) < 0.5 * nll(fresh)


def test_builtin_model_build_is_cached_and_deterministic(tiny_model_path, tmp_path, monkeypatch):
    from sweep.builtin import builtin_model_path

    assert builtin_model_path("tiny", log=lambda *_: None) == tiny_model_path  # reused, not rebuilt
    # Two builds of one recipe give the same bytes (a shortened SFT, so the test costs seconds).
    monkeypatch.setitem(RECIPE, "sft_steps", 20)
    builds = []
    for name in ("a", "b"):
        monkeypatch.setenv("SWEEP_CACHE", str(tmp_path / name))
        builds.append(builtin_model_path("tiny", log=lambda *_: None))
    assert builds[0].name == builds[1].name != tiny_model_path.name  # the recipe is in the cache key
    for name in ("model.safetensors", "tokenizer.json"):
        assert (builds[0] / name).read_bytes() == (builds[1] / name).read_bytes(), name
