"""Base model and tokenizer: resolve `builtin:` names, pick quantization, load for LoRA training."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..builtin import builtin_model_path


def resolve_model_path(model: str, log=print) -> str:
    """A path or hub id that `from_pretrained` understands (builds `builtin:*` models if needed)."""
    if model.startswith("builtin:"):
        return str(builtin_model_path(model.removeprefix("builtin:"), log=log))
    local = Path(model).expanduser()
    return str(local.resolve()) if local.is_dir() else model  # trials run in folders of their own


def quantization_config(settings: dict[str, Any], cuda: bool, compute_dtype: str = "float32"):
    """BitsAndBytesConfig for the spec's quantization settings, or None for full precision.

    `auto` means QLoRA (4-bit nf4) where CUDA is available and plain LoRA elsewhere: 4-bit on
    CPU works but is slower than full precision for small models and has the bug below. The
    4-bit layers compute in the training precision (`compute_dtype`: bfloat16 under `bf16`,
    float16 under `fp16`) unless the spec names `bnb_4bit_compute_dtype`.
    """
    from transformers import BitsAndBytesConfig

    mode = settings.get("mode", "auto")
    fields = {k: v for k, v in settings.items() if k != "mode"}
    if mode == "none" or (mode == "auto" and not cuda):
        return None
    if mode == "8bit":
        return BitsAndBytesConfig(**{"load_in_8bit": True, **fields})
    defaults = {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": compute_dtype,
    }
    return BitsAndBytesConfig(**{**defaults, **fields})


def precision(train: dict[str, Any], cuda: bool, native_bf16: bool | None = None) -> dict[str, Any]:
    """The `bf16`/`fp16` a trial trains in, from the spec's `train` section and the device.

    On CPU: full precision unless the spec asks for bf16 (the GPU configuration, runnable here:
    CPU autocast supports it); fp16 autocast is not offered on CPU. On CUDA: the configs' own
    default (bf16) where the GPU computes bf16 natively, fp16 where it only emulates bf16
    (pre-Ampere: T4, V100), where emulation would make every step several times slower.
    `native_bf16`: whether it does (None: ask torch).
    """
    given = {k: train[k] for k in ("bf16", "fp16") if train.get(k) is not None}  # null: the default
    if not cuda:
        return {"bf16": bool(given.get("bf16", False)), "fp16": False}
    if given:
        return {"bf16": bool(given.get("bf16", not given.get("fp16"))), "fp16": bool(given.get("fp16", False))}
    if native_bf16 is None:
        import torch

        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    return {"bf16": True, "fp16": False} if native_bf16 else {"bf16": False, "fp16": True}


def describe_training(spec) -> str:
    """One line for `plan`: what a trial trains (quantization, precision) on a GPU and on a CPU,
    by the rules of `quantization_config` and `precision`."""
    from ..spec.checks import section_of

    mode = spec.quantization.get("mode", "auto")

    def on(cuda: bool, native_bf16: bool = True) -> str:
        p = precision(spec.train, cuda, native_bf16)
        dtype = "bf16" if p["bf16"] else "fp16" if p["fp16"] else "fp32"
        if mode == "none" or (mode == "auto" and not cuda):
            return f"LoRA in {dtype}"
        return f"{'8-bit' if mode == '8bit' else '4-bit nf4'} QLoRA in {dtype}"

    gpu, emulated = on(True), on(True, native_bf16=False)
    if emulated != gpu:
        gpu += f" ({emulated.rsplit(' ', 1)[1]} where the GPU lacks native bf16)"
    line = f"training: on a GPU {gpu}; on a CPU {on(False)}"
    if spec.resources.gpu == 0:
        line = f"training: {on(False)} on the CPU (resources.gpu: 0)"
    swept = [n for n in spec.axis_names() if section_of(n) == "quantization" or n in ("bf16", "fp16")]
    return line + (f"; per trial where {', '.join(swept)} is swept" if swept else "")


def uses_cuda(gpu: float | None) -> bool:
    """Whether a trial holding `gpu` of a GPU (`resources.gpu`; None: one where there is one)
    trains on CUDA. A trial given none is kept off every GPU: Ray 2.60 no longer empties
    CUDA_VISIBLE_DEVICES for it (ray#54868), so it would otherwise use GPU 0 uncounted; emptied
    here before anything starts CUDA in this process, nothing in the trial sees one."""
    import os

    import torch

    if gpu == 0:
        if not torch.cuda.is_initialized():
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return False
    return torch.cuda.is_available()


def quantizes(spec, cuda: bool) -> bool:
    """Whether any trial of `spec` loads a 4-bit/8-bit base where CUDA is `cuda`."""
    from ..spec.checks import section_of

    mode = spec.quantization.get("mode", "auto")
    swept = any(section_of(name) == "quantization" for name in spec.axis_names())
    return swept or mode in ("4bit", "8bit") or (mode == "auto" and cuda)


def skip_bitsandbytes() -> None:
    """Make this process treat bitsandbytes as not installed; for processes that load no
    quantized model (the driver; the workers of a sweep that does not quantize).

    transformers' Trainer imports PEFT and PEFT imports bitsandbytes wherever it is
    installed; bitsandbytes 0.50.2 imports torch._inductor as it loads: seconds of CPU per
    process, on the path to every sweep's first step. `None` in sys.modules is
    Python's own way to block an import: PEFT's and transformers' availability checks
    (importlib.util.find_spec) then answer False. A no-op where it is imported already.
    Ray workers run it as they import `sweep`, where SWEEP_SKIP_BITSANDBYTES=1 (cluster.py)."""
    sys.modules.setdefault("bitsandbytes", None)


# Tokenizer classes that are `tokenizer.json` and nothing else: loaded without AutoTokenizer,
# which reads the model's config and so imports torch, into a driver that trains nothing.
PLAIN_TOKENIZERS = {"TokenizersBackend", "PreTrainedTokenizerFast"}


def load_tokenizer(path: str):
    import json

    config = Path(path) / "tokenizer_config.json"
    if config.is_file() and json.loads(config.read_text()).get("tokenizer_class") in PLAIN_TOKENIZERS:
        from transformers import PreTrainedTokenizerFast as Tokenizer
    else:
        from transformers import AutoTokenizer as Tokenizer  # importing it imports torch
    tokenizer = Tokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(path: str, bnb_config, cuda: bool, bf16: bool):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, **base_model_kwargs(bnb_config, cuda, bf16))


def base_model_kwargs(bnb_config, cuda: bool, bf16: bool) -> dict[str, Any]:
    """`from_pretrained` arguments of a trial's base model: its dtype, quantization and device.
    On CUDA it is loaded straight onto the trial's GPU (Ray makes it device 0), quantized or not:
    a base loaded on the host and moved by the trainer no longer matches what a warm worker
    fingerprinted, and would be loaded again for every trial."""
    import torch

    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if bf16 else torch.float32}
    if bnb_config is not None:
        kwargs["quantization_config"] = bnb_config
    if cuda:
        kwargs["device_map"] = {"": 0}
    elif bnb_config is not None:
        kwargs["device_map"] = "cpu"
    return kwargs


def disable_bnb_cpu_repack(model) -> int:
    """Work around bitsandbytes 0.50.2 on CPUs with AVX512-BF16.

    The first eval-mode forward repacks 4-bit weights into an inference layout; after that,
    training silently gets no LoRA gradients ("bitsandbytes::gemv_4bit: an autograd kernel
    was not registered"). Turning the repack off keeps training correct; a run with evals
    then matches a run without (tests/integration/test_trial.py::test_4bit_cpu_eval_keeps_training).
    Returns the number of 4-bit layers patched.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    patched = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            patched += 1
    return patched
