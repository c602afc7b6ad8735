"""The GPU configuration on any machine, without training: what `quantization: auto` means on CUDA
(4-bit nf4 QLoRA, bf16) for every loss family, and the CUDA-only branches (configs, device choice,
placement, memory metrics, the warm base's check) called with CUDA reported present."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sweep.spec.load import parse_spec
from sweep.trial import kept_model
from tests.conftest import FAMILIES, REPO, small_spec

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


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
