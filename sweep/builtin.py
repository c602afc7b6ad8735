"""The embedded default: a tiny chat model built offline, and the shipped preference data.

`builtin:tiny` is a 2-layer Llama with a byte-level BPE tokenizer and a ChatML chat
template. It is built deterministically from the shipped dataset and then
supervised-fine-tuned on its tasks, so DPO starts from an SFT policy as every real recipe
does (SFT -> DPO). Like real SFT models it answers mostly right but not always, and on some
tasks it hedges after its answer ("cat, I think, but I am not sure."): the SFT mix has such
answers for those tasks (RECIPE["hedging"]), so preference tuning has something to fix
that a judge of its generations can see. The result is cached on disk (a few hundred KB)
keyed by a hash of everything that shapes it, and rebuilt only when that changes.

`builtin:prefs` is the dataset in `sweep/assets/prefs/` (see scripts/make_builtin_dataset.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .runtime.startup import keep_freed_memory

ASSETS = Path(__file__).resolve().parent / "assets"
BUILTIN_DATASETS = {"prefs": ASSETS / "prefs"}
BUILTIN_MODELS = ("tiny", "judge")

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Everything that shapes the built model. Change any of it and the cache key changes.
RECIPE = {
    "version": 2,
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 256,
    "seed": 0,
    "sft_steps": 700,
    "sft_batch_size": 64,  # the tasks' copy circuits form within a budget at this batch, not at 16
    "sft_learning_rate": 4e-3,
    # Share of SFT answers hedged (answer + a filler), per task: the model learns to hedge
    # where most of its examples do, and to stop after the answer elsewhere.
    "hedging": {"larger": 0.15, "smaller": 0.15, "animal": 0.7, "fruit": 0.7, "first": 0.7, "last": 0.7},
}
FILLERS = [", I think, but I am not sure.", ". Well, that is my best guess."]
# builtin:judge is builtin:tiny fine-tuned further to judge its tasks' answers in the compact
# templates (trial/llm_judge.py): the right answer beats a hedged one, which beats a wrong one.
JUDGE_TEMPLATES = {  # short enough for its context; `builtin:compact` in a spec
    "pairwise": "Judge. Q: {question}\nA: {answer_a}\nB: {answer_b}\nBetter: [[A]], [[B]] or [[C]] (tie)?",
    "grade": "Grade. Q: {question}\nAnswer: {answer}\nGrade 1 to 10 as [[n]].",
}
JUDGE_RECIPE = {
    "version": 1,
    "steps": 400,
    "batch_size": 32,
    "learning_rate": 3e-3,
    "tie_share": 0.1,  # pairs of one answer twice, judged [[C]]
    "grades": {"right": 9, "hedged": 6, "wrong": 2},
}


def cache_root() -> Path:
    return Path(os.environ.get("SWEEP_CACHE", Path.home() / ".cache" / "sweep"))


def _recipe_key(name: str) -> str:
    shape = [RECIPE, FILLERS] + ([JUDGE_RECIPE, JUDGE_TEMPLATES] if name == "judge" else [])
    h = hashlib.sha256(json.dumps(shape, sort_keys=True).encode())
    h.update((BUILTIN_DATASETS["prefs"] / "train.jsonl").read_bytes())
    return h.hexdigest()[:12]


def builtin_model_path(name: str, log=print) -> Path:
    """Path of the built model `builtin:<name>`, building it first if it is not cached."""
    if name not in BUILTIN_MODELS:
        raise ValueError(f"unknown builtin model {name!r}; choose from {', '.join(BUILTIN_MODELS)}")
    path = cache_root() / f"builtin-{name}-{_recipe_key(name)}"
    if (path / "config.json").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Build into a temporary sibling and rename: concurrent builders (two trials, two nodes
    # on a shared disk) never see a half-written model, and the loser's copy is discarded.
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        log(f"building builtin:{name} (one-off, cached at {path})")
        _build_judge(tmp, log) if name == "judge" else _build_tiny(tmp, log)
        try:
            os.rename(tmp, path)
        except OSError:  # someone else finished first
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists() and not (path / "config.json").exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _sft_rows() -> list[dict]:
    """The SFT set: each training prompt with its right answer, hedged at the task's rate."""
    import random

    rng = random.Random(RECIPE["seed"])
    rows = []
    for r in map(json.loads, open(BUILTIN_DATASETS["prefs"] / "train.jsonl")):
        answer = r["answer"] + rng.choice(FILLERS) if rng.random() < RECIPE["hedging"][r["task"]] else r["answer"]
        rows.append({"prompt": r["prompt"], "completion": [{"role": "assistant", "content": answer}]})
    return rows


def _build_tokenizer(conversations: list[list[dict]]):
    from jinja2 import Template
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    template = Template(CHAT_TEMPLATE)
    texts = [template.render(messages=c, add_generation_prompt=False) for c in conversations]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=RECIPE["vocab_size"],
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|im_end|>",  # a chat turn ends with <|im_end|>, as in Qwen/ChatML models
        unk_token="<|unk|>",
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )


def _build_tiny(out: Path, log) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    keep_freed_memory()  # 700 steps of CPU training
    torch.manual_seed(RECIPE["seed"])
    sft_rows = _sft_rows()
    tokenizer = _build_tokenizer([r["prompt"] + r["completion"] for r in sft_rows])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=RECIPE["hidden_size"],
        intermediate_size=RECIPE["intermediate_size"],
        num_hidden_layers=RECIPE["num_hidden_layers"],
        num_attention_heads=RECIPE["num_attention_heads"],
        num_key_value_heads=RECIPE["num_attention_heads"],
        max_position_embeddings=RECIPE["max_position_embeddings"],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)

    # Prompt-completion format: loss on the completion only.
    result = _sft(
        model, tokenizer, sft_rows, RECIPE["sft_steps"], RECIPE["sft_batch_size"], RECIPE["sft_learning_rate"], 20, 64
    )
    log(f"builtin:tiny SFT done: {RECIPE['sft_steps']} steps, final train loss {result.training_loss:.3f}")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "sweep_recipe.json").write_text(json.dumps(RECIPE, indent=2))


def _judge_rows() -> list[dict]:
    """The judge's SFT set, from the training pairs: which of two answers is better (both
    orders, some ties), and a grade for each answer."""
    import random

    pairwise, grade_template = JUDGE_TEMPLATES["pairwise"], JUDGE_TEMPLATES["grade"]
    rng = random.Random(RECIPE["seed"])
    rows = []

    def ask(text: str, verdict: str) -> None:
        rows.append(
            {"prompt": [{"role": "user", "content": text}], "completion": [{"role": "assistant", "content": verdict}]}
        )

    for r in map(json.loads, open(BUILTIN_DATASETS["prefs"] / "train.jsonl")):
        question, good, bad = r["prompt"][-1]["content"], r["chosen"][-1]["content"], r["rejected"][-1]["content"]
        # The judge writes its reasoning first, one step at a time: the right answer, then
        # what each answer is, then the verdict (a 2-layer model cannot do it in one token).
        right = f"Right: {r['answer']}. "
        grade_of = {good: "right", bad: "hedged" if r["flaw"] == "rambling" else "wrong"}
        rank = {"right": 2, "hedged": 1, "wrong": 0}
        if rng.random() < JUDGE_RECIPE["tie_share"]:
            a = b = rng.choice([good, bad])
        else:
            a, b = (good, bad) if rng.random() < 0.5 else (bad, good)
        ra, rb = rank[grade_of[a]], rank[grade_of[b]]
        verdict = "[[A]]" if ra > rb else "[[B]]" if rb > ra else "[[C]]"
        reasons = f"{right}A {grade_of[a]}. B {grade_of[b]}. "
        ask(_filled(pairwise, question=question, answer_a=a, answer_b=b), reasons + verdict)
        answer = rng.choice([good, bad])
        grade = JUDGE_RECIPE["grades"][grade_of[answer]]
        ask(_filled(grade_template, question=question, answer=answer), f"{right}It is {grade_of[answer]}. [[{grade}]]")
    rng.shuffle(rows)
    return rows


def _filled(template: str, **slots: str) -> str:
    for slot, value in slots.items():
        template = template.replace("{" + slot + "}", value)
    return template


def _build_judge(out: Path, log) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    keep_freed_memory()
    tiny = builtin_model_path("tiny", log)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    r = JUDGE_RECIPE
    result = _sft(model, tokenizer, _judge_rows(), r["steps"], r["batch_size"], r["learning_rate"], 10, 160)
    log(f"builtin:judge SFT done: {JUDGE_RECIPE['steps']} steps, final train loss {result.training_loss:.3f}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "sweep_recipe.json").write_text(json.dumps({"tiny": RECIPE, "judge": JUDGE_RECIPE}, indent=2))


BUILTIN_HARNESS_TASKS = ("prefs_choice",)


def harness_task_folder(name: str) -> Path:
    """`builtin:<name>` as an lm-evaluation-harness task folder (YAML + data file), written once
    into the cache: the held-out prompts of the builtin tasks as multiple choice, the right
    answer among the words the prompt offers, scored by log-likelihood (`acc`)."""
    import re

    if name not in BUILTIN_HARNESS_TASKS:
        raise ValueError(f"unknown builtin task {name!r}; choose from {', '.join(BUILTIN_HARNESS_TASKS)}")
    source = BUILTIN_DATASETS["prefs"] / "test.jsonl"
    folder = cache_root() / f"harness-{name}-{hashlib.sha256(source.read_bytes()).hexdigest()[:12]}"
    if (folder / f"{name}.yaml").exists():
        return folder
    rows = []
    for r in map(json.loads, open(source)):
        question = r["prompt"][-1]["content"]
        offered = re.search(r"[:,] (\S+) or (\S+)\?$", question)
        choices = list(offered.groups()) if offered else question.split(": ", 1)[1].split()
        rows.append({"question": question, "choices": choices, "gold": choices.index(r["answer"])})
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "test.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: gold\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n"
    )
    return folder


def _sft(model, tokenizer, rows: list[dict], steps: int, batch: int, lr: float, warmup: int, max_length: int):
    """Supervised fine-tuning of `model` on prompt-completion `rows` (loss on the completion
    only), cosine schedule, on the CPU; TRL's train result."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(
            output_dir=tmp,
            max_steps=steps,
            per_device_train_batch_size=batch,
            learning_rate=lr,
            lr_scheduler_type="cosine",
            warmup_steps=warmup,
            max_length=max_length,
            seed=RECIPE["seed"],
            use_cpu=True,
            bf16=False,
            activation_checkpointing=False,
            logging_steps=steps,
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)  # the builder's one summary line is enough
        return trainer.train()
