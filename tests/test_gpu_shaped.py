"""The GPU configuration on any machine: what `quantization: auto` means on CUDA (4-bit nf4
QLoRA, bf16 compute, bf16 training) through every loss family, and the CUDA-only branches
(configs, device choice, placement, memory metrics, the warm base's check) called with CUDA
reported present. A CPU runs all of it, slowly; docs/gpu.md says what only a GPU can show."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sweep.spec.load import parse_spec
from sweep.trial import kept_model

from .conftest import REPO, small_spec

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

FAMILIES = {"sigmoid": "dpo", "ipo": "dpo", "kto": "kto", "simpo": "cpo", "cpo": "cpo", "orpo": "orpo"}


@pytest.fixture
def cuda_reported(monkeypatch):
    """torch says a CUDA GPU is here (with native bf16: `cuda_reported.bf16 = False` for a T4).
    The stack is imported first: bitsandbytes binds CUDA kernels as it loads when it sees a GPU."""
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import torch
    import trl  # noqa: F401

    class Reported:
        bf16 = True

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)  # TrainingArguments picks cuda:0
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: Reported.bf16)
    return Reported


def _configs(tmp_path, loss_type, cuda, **overrides):
    from sweep.trial.configs import build_configs

    spec = parse_spec(small_spec("cfg", axes={"loss_type": [loss_type]}, **overrides))
    return build_configs(spec, {"loss_type": loss_type}, tmp_path, cuda)


@pytest.mark.parametrize("loss_type", FAMILIES)
def test_auto_on_cuda_is_4bit_nf4_qlora_in_bf16_for_every_family(cuda_reported, tmp_path, loss_type):
    """...and it is exactly the configuration the CPU tier runs (gpu_check.GPU_CONFIGURATION)."""
    family, args, lora, bnb = _configs(tmp_path, loss_type, cuda=True, quantization="auto")
    assert family.name == FAMILIES[loss_type]
    assert (args.bf16, args.fp16, args.use_cpu) == (True, False, False)
    assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_use_double_quant
    assert str(bnb.bnb_4bit_compute_dtype) == "torch.bfloat16"
    _, cpu_args, _, cpu_bnb = _configs(tmp_path, loss_type, cuda=False, **gpu_check.GPU_CONFIGURATION)
    assert cpu_bnb.to_dict() == bnb.to_dict()
    assert (cpu_args.bf16, cpu_args.fp16, cpu_args.use_cpu) == (True, False, True)
    _, _, _, none = _configs(tmp_path, loss_type, cuda=False, quantization="auto")
    assert none is None  # on a CPU `auto` is full-precision LoRA


def test_on_a_gpu_without_native_bf16_auto_trains_in_fp16(cuda_reported, tmp_path):
    """A T4 or V100 only emulates bf16 (torch says yes, including emulation): several times slower."""
    cuda_reported.bf16 = False
    _, args, _, bnb = _configs(tmp_path, "sigmoid", cuda=True, quantization="auto")
    assert (args.bf16, args.fp16) == (False, True) and str(bnb.bnb_4bit_compute_dtype) == "torch.float16"
    cuda_reported.bf16 = True
    _, args, _, bnb = _configs(tmp_path, "simpo", cuda=True, quantization="auto", train={"fp16": True})
    assert (args.bf16, args.fp16) == (False, True) and str(bnb.bnb_4bit_compute_dtype) == "torch.float16"


def test_a_trial_given_no_gpu_is_kept_off_the_gpus(cuda_reported, monkeypatch):
    """Ray 2.60 leaves CUDA_VISIBLE_DEVICES alone for a zero-GPU actor (ray#54868)."""
    import os

    from sweep.trial.model import uses_cuda

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert uses_cuda(None) and uses_cuda(0.5) and uses_cuda(1)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert uses_cuda(0) is False and os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_the_base_model_loads_onto_the_trials_gpu_quantized_or_not():
    import torch
    from transformers import BitsAndBytesConfig

    from sweep.trial.model import base_model_kwargs

    bnb = BitsAndBytesConfig(load_in_4bit=True)
    assert base_model_kwargs(bnb, cuda=True, bf16=True) == {
        "dtype": torch.bfloat16,
        "quantization_config": bnb,
        "device_map": {"": 0},
    }
    # Unquantised too: moved there by the trainer instead, it no longer matches the warm worker's fingerprint.
    assert base_model_kwargs(None, cuda=True, bf16=True) == {"dtype": torch.bfloat16, "device_map": {"": 0}}
    assert base_model_kwargs(bnb, cuda=False, bf16=False)["device_map"] == "cpu"
    assert base_model_kwargs(None, cuda=False, bf16=False) == {"dtype": torch.float32}


def test_peak_gpu_memory_counts_this_trial_only(cuda_reported, monkeypatch):
    """What a warm worker's earlier trial left in torch's cache is freed before the peak is reset."""
    import torch
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from sweep.trial.callbacks import StepStats

    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: calls.append("reset_peak"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 3 * 2**29)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda: 2**31)
    args = TrainingArguments(output_dir="unused", bf16=False, report_to=[])
    stats, state = StepStats(), TrainerState()
    stats.on_train_begin(args, state, TrainerControl())
    stats.on_train_end(args, state, TrainerControl())
    assert calls == ["empty_cache", "reset_peak"]
    assert stats.measured == {"gpu/peak_allocated_gib": 1.5, "gpu/peak_reserved_gib": 2.0}


def _small_causal_lm():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    return LlamaForCausalLM(config)


def test_the_warm_base_check_sees_dtype_casts_the_gpu_digest_alone_would_miss(monkeypatch):
    """On a GPU the check digests each tensor there; a bf16 -> fp32 cast keeps every value (and so
    the old per-tensor sums), so a base left in fp32 by a CPO trial passed as unchanged."""
    import torch

    monkeypatch.setattr(kept_model, "_digest", kept_model.device_digest)  # as on a GPU
    model = _small_causal_lm().to(torch.bfloat16)
    before = kept_model.weights_fingerprint(model)
    norm = model.model.norm
    norm.to(torch.float32)  # prepare_model_for_kbit_training does this to every norm
    assert kept_model.weights_fingerprint(model) != before
    norm.to(torch.bfloat16)
    assert kept_model.weights_fingerprint(model) == before  # bf16 -> fp32 -> bf16 is exact

    weight = model.model.layers[0].mlp.up_proj.weight
    with torch.no_grad():
        weight[0, 0], weight[0, 1] = weight[0, 1].clone(), weight[0, 0].clone()  # two words swapped
    assert kept_model.weights_fingerprint(model) != before


def test_the_gpu_digest_reads_a_tensor_in_bounded_chunks(monkeypatch):
    import torch

    t = torch.randn(1000, 37)
    whole = kept_model.device_digest(t)
    monkeypatch.setattr(kept_model, "CHUNK", 7)  # 5,286 chunks of 7 words: the same digest
    assert kept_model.device_digest(t) == whole
    flipped = t.clone()
    flipped.view(torch.int32)[500, 3] ^= 1  # one bit
    assert kept_model.device_digest(flipped) != whole
    odd = torch.arange(7, dtype=torch.uint8)  # a size no 4-byte word divides: read byte by byte
    assert kept_model.device_digest(odd) != kept_model.device_digest(odd.flip(0))


def test_warm_workers_on_a_node_with_several_gpus_do_not_start_cuda_before_ray_picks_theirs(monkeypatch):
    """bitsandbytes (TRL -> PEFT -> bitsandbytes) asks CUDA for every device as it loads: a worker
    that preloaded it would see all GPUs whatever CUDA_VISIBLE_DEVICES Ray sets for its trial."""
    from sweep.runtime import worker_preload

    for nodes, skip, has_trl in ((2, "0", False), (2, "1", True), (1, "0", True), (0, "0", True)):
        monkeypatch.setattr(worker_preload.glob, "glob", lambda pattern, n=nodes: [f"/dev/nvidia{i}" for i in range(n)])
        monkeypatch.setenv("SWEEP_SKIP_BITSANDBYTES", skip)
        preloaded = worker_preload.modules()
        assert any(m.startswith("trl.") for m in preloaded) is has_trl, (nodes, skip)
        assert "mlflow.tracking" in preloaded


# ---- on the embedded model: real 4-bit loads, real trainers ---------------------------------------


def _four_bit_bf16():
    from sweep.trial.model import quantization_config

    return quantization_config(gpu_check.GPU_CONFIGURATION["quantization"], cuda=False)


def test_evaluating_a_4bit_trial_leaves_its_weights_and_optimizer_dtypes_alone(tiny_model_path):
    """The held-out DPO evaluation of a SimPO/ORPO trial builds a DPOTrainer on the live model;
    built on a 4-bit model, TRL casts its trainable (LoRA) weights to bf16, and the trial's next
    step met fp32 optimizer state: `expected scalar type BFloat16 but found Float`."""
    import torch
    from peft import LoraConfig, get_peft_model

    from sweep.data import load_preference_data
    from sweep.spec.load import DatasetSpec
    from sweep.trial.evaluation import PairedEval
    from sweep.trial.model import load_base_model, load_tokenizer

    base = load_base_model(str(tiny_model_path), _four_bit_bf16(), cuda=False, bf16=True)
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear"))
    lora = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
    assert set(lora.values()) == {torch.float32}
    pairs = load_preference_data(DatasetSpec(max_eval_rows=16))["eval"]
    scorer = PairedEval(
        model, load_tokenizer(str(tiny_model_path)), pairs, beta=0.1, max_length=128, batch_size=8, cpu=True, bf16=True
    )
    assert {n: p.dtype for n, p in model.named_parameters() if p.requires_grad} == lora
    assert 0 <= scorer()["eval_rewards/accuracies"] <= 1


def test_a_warm_base_left_by_a_cpo_trial_is_put_back_as_loaded_and_reused(tiny_model_path):
    """CPO's and ORPO's trainers prepare the 4-bit base for k-bit training (norms and embeddings
    cast, gradient checkpointing turned on): released, the next trial of the
    worker (a DPO one) gets the base exactly as loaded, and reuses it instead of loading it again."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from sweep.compat.hf_internals import peft_casting_to_bf16

    said = []
    bnb = _four_bit_bf16()
    kept_model._BASE.clear()
    try:
        base = kept_model.base_model(str(tiny_model_path), bnb, cuda=False, bf16=True, log=said.append)
        loaded = kept_model.weights_fingerprint(base)
        prepared = prepare_model_for_kbit_training(base, use_gradient_checkpointing=True)  # as CPOTrainer does
        model = get_peft_model(prepared, LoraConfig(r=4, target_modules="all-linear"))
        peft_casting_to_bf16(model)
        assert kept_model.weights_fingerprint(base) != loaded and base.is_activation_checkpointing
        kept_model.release_base_model(model)
        again = kept_model.base_model(str(tiny_model_path), bnb, cuda=False, bf16=True, log=said.append)
        assert again is base and said == ["base model: reused from this worker's previous trial"]
        assert kept_model.weights_fingerprint(again) == loaded
        assert not again.is_activation_checkpointing
    finally:
        kept_model._BASE.clear()


def test_shared_caches_tell_a_4bit_base_from_a_16bit_one(tiny_model_path):
    """The judge's cached base answers and the reference log-probs key on `model_identity`:
    a 4-bit and a bf16 load of the same weights answer differently."""
    from sweep.runtime.shared_cache import model_identity
    from sweep.trial.model import load_base_model

    path = str(tiny_model_path)
    four_bit = load_base_model(path, _four_bit_bf16(), cuda=False, bf16=True)
    sixteen = load_base_model(path, None, cuda=False, bf16=True)
    assert four_bit.dtype == sixteen.dtype and model_identity(four_bit) != model_identity(sixteen)


def test_every_family_in_the_gpu_configuration_judged_evaluated_and_promoted(tiny_model_path, tmp_path):
    """`benchmarks/gpu_check.py --smoke`: a sweep of the six losses (four trainers) in 4-bit nf4
    with bf16 compute and training, two trials at a time in warm workers they share across
    families, evaluations with the judge (a reward model, a function and the builtin scorer), samples and
    every adapter saved; then `sweep evaluate` and `sweep promote`. Before the fixes, the SimPO,
    CPO and ORPO trials failed at their first evaluation (`expected m1 and m2 to have the same dtype`
    generating answers outside autocast, then `expected scalar type BFloat16 but found Float`)."""
    out = tmp_path / "check.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "gpu_check.py"),
            "--smoke",
            "--work",
            str(tmp_path),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads(out.read_text())
    assert result["passed"] and [c["exit"] for c in result["commands"].values()] == [0, 0, 0]
    trials = {t["loss_type"]: t for t in result["trials"]}
    assert set(trials) == set(FAMILIES)
    for loss_type, t in trials.items():
        assert t["status"] == "FINISHED", (loss_type, t["error"])
        assert t["judge_score"] is not None and t["judge_s"] > 0, loss_type
        assert {"reward-model", "brevity", "verifiable", "win_rate"} <= set(t["judged_by"]), t["judged_by"]
        assert t["samples_logged"] and t["adapter_saved"], loss_type
        # Recomputed from the saved adapter on a base rebuilt as the trainer had it: the same value.
        assert t["verified_eval_rewards/accuracies"] == pytest.approx(t["eval_rewards/accuracies"], abs=1e-9)
    assert sum(t["base_reused"] for t in trials.values()) >= 2  # later trials of each worker, across families
    assert (tmp_path / "smoke" / "promoted" / "model.safetensors").exists()


def _wheel(folder, name: str, payload: bytes):
    import zipfile

    info = f"{name}-1.0.dist-info"
    path = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:  # stored, not compressed: its size is the payload's
        z.writestr(f"{name}/__init__.py", f"SIZE = {len(payload)}\n")
        z.writestr(f"{name}/blob.bin", payload)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def test_the_stack_is_carried_in_parts_a_device_command_can_take_and_installed_part_by_part(tmp_path):
    """scripts/gpu_carry.py: wheels packed into parts of at most the limit (a wheel over it in
    pieces spread over parts), installed there one part per command, offline."""
    import os
    import random

    sys.path.insert(0, str(REPO / "scripts"))
    import gpu_carry

    wheels, carry = tmp_path / "wheels", tmp_path / "carry"
    wheels.mkdir()
    _wheel(wheels, "bigpkg", random.Random(0).randbytes(5 * 2**19))  # 2.5 MiB: three pieces
    _wheel(wheels, "smallpkg", b"x" * 1000)
    sizes = gpu_carry.into_parts(wheels, carry, limit=2**20)
    parts = sorted(carry.glob("part-*"))
    assert len(parts) == len(sizes) == 3 and max(sizes) <= 2**20
    for n, part in enumerate(parts):
        gpu_carry.main(["--dir", str(carry), "install", str(part)])
        installed = {p.name for p in (carry / "site").iterdir()} if (carry / "site").exists() else set()
        assert ("bigpkg" in installed) is (n == len(parts) - 1)  # whole only once its last piece came
    assert not any((carry / "staged").iterdir())
    probe = "import bigpkg, smallpkg; print(bigpkg.SIZE)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(carry / "site")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == str(5 * 2**19), out.stderr


def test_the_gpu_benchmarks_start(tmp_path):
    """Both GPU scripts import and parse their arguments (gpu_qlora.py once imported a helper that had gone)."""
    for script in ("gpu_check.py", "gpu_qlora.py"):
        out = subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / script), "--help"], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0 and "usage:" in out.stdout, out.stderr


def test_a_judges_reward_model_runs_on_the_judged_models_device(cuda_reported, tiny_model_path, tmp_path):
    """Where torch sees a GPU but the trial trains on the CPU (`resources.gpu: 0`), its reward
    model stays on the CPU with it (it went to the GPU, uncounted, whatever the trial held)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    from sweep.trial import scorers

    path = tmp_path / "rm"
    config = AutoConfig.from_pretrained(tiny_model_path)
    config.num_labels = 1
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(path)
    scorer = scorers.parse_scorer("judge.scorers[0]", {"reward_model": str(path)})
    try:
        scores = scorers.call_scorer(scorer, ["Which is larger, 3 or 4?"], ["4"], {}, [], device="cpu")
        assert len(scores) == 1 and isinstance(scores[0], float)
        assert [key[1] for key in scorers._REWARD_MODELS if key[0] == str(path)] == ["cpu"]
    finally:
        for key in [k for k in scorers._REWARD_MODELS if k[0] == str(path)]:
            del scorers._REWARD_MODELS[key]


@pytest.mark.parametrize(
    "overrides",
    [
        {"quantization": "auto"},
        {"quantization": "none", "train": {"bf16": True}},
        {"train": {"fp16": True}},
        {"train": {"bf16": None}},
        gpu_check.GPU_CONFIGURATION,
    ],
    ids=["auto", "none-bf16", "fp16", "bf16-null", "gpu-configuration"],
)
def test_plan_says_what_a_trial_trains_in_on_each_device_as_the_configs_build_it(cuda_reported, tmp_path, overrides):
    """`plan`'s `training:` line, read back, matches what `build_configs` gives on a GPU with and
    without native bf16 and on a CPU."""
    from sweep.trial.model import describe_training

    def built(cuda: bool) -> str:
        _, args, _, bnb = _configs(tmp_path, "sigmoid", cuda, **overrides)
        dtype = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
        return f"4-bit nf4 QLoRA in {dtype}" if bnb is not None else f"LoRA in {dtype}"

    line = describe_training(parse_spec(small_spec("cfg", axes={"loss_type": ["sigmoid"]}, **overrides)))
    gpu, cpu = built(True), built(False)
    cuda_reported.bf16 = False
    emulated = built(True)
    expected_gpu = gpu if emulated == gpu else f"{gpu} ({emulated.rsplit(' ', 1)[1]} where the GPU lacks native bf16)"
    assert line == f"training: on a GPU {expected_gpu}; on a CPU {cpu}"
    if overrides in ({"quantization": "auto"}, {"train": {"bf16": None}}):  # null: the default, as if unset
        assert (
            line
            == "training: on a GPU 4-bit nf4 QLoRA in bf16 (fp16 where the GPU lacks native bf16); on a CPU LoRA in fp32"
        )
