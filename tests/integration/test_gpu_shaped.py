"""The GPU configuration on any machine: what `quantization: auto` means on CUDA (4-bit nf4
QLoRA, bf16 compute, bf16 training) through every loss family, and the CUDA-only branches
(configs, device choice, placement, memory metrics, the warm base's check) called with CUDA
reported present. A CPU runs all of it, slowly; docs/gpu.md says what only a GPU can show."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sweep.trial import kept_model
from tests.conftest import FAMILIES, REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


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
