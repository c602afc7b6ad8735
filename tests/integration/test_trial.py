"""One trial on its own: a plain function, real TRL training on the builtin tiny model."""

from __future__ import annotations

import json
import math

import pytest

from sweep.spec.load import parse_spec
from sweep.trial.run import TrialContext, run_trial
from tests.conftest import small_spec

CORE_METRICS = [
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "eval_loss",
    "eval_rewards/chosen",
    "eval_rewards/rejected",
    "eval_rewards/margins",
    "eval_rewards/accuracies",
    "eval_logps/chosen",
    "eval_logps/rejected",
    "train_runtime",
]


def test_trial_runs_without_ray_or_mlflow(tiny_model_path, tmp_path, monkeypatch):
    from sweep.runtime import startup

    train = {"max_steps": 20, "eval_steps": 10, "include_num_input_tokens_seen": "non_padding"}
    spec = parse_spec(small_spec("standalone", results_dir=str(tmp_path), train=train))
    reports, kept = [], []
    monkeypatch.setattr(startup, "keep_freed_memory", lambda keep=startup.keep_freed_memory: kept.append(keep()))
    metrics = run_trial(TrialContext(spec=spec, model_path=str(tiny_model_path)), {"beta": 0.5}, report=reports.append)
    assert kept == [True]  # training on CPU: each step reuses the last one's freed memory
    for key in CORE_METRICS:
        assert key in metrics, key
    assert metrics["global_step"] == 20
    # Steady speed: steps 2..20 without the two evaluations inside training (Trainer's own
    # runtime counts them and the first step); tokens/s over the same 19 steps.
    assert 0 < metrics["time/step_s"] < metrics["train_runtime"] / 20
    tokens = metrics["time/tokens_per_s"] * metrics["time/step_s"] * 19
    assert 0.8 * metrics["num_input_tokens_seen"] < tokens < metrics["num_input_tokens_seen"]
    assert not any(k.startswith("gpu/") for k in metrics)  # peak GPU memory only where there is one
    # The shipped data carries a learnable signal: held-out preference accuracy well above chance.
    assert metrics["eval_rewards/accuracies"] > 0.6
    # An intermediate eval was reported, then the final metrics once.
    assert [r["global_step"] for r in reports] == [10, 20]
    saved = json.loads((tmp_path / "standalone" / "trials").glob("*/trial_config.json").__next__().read_text())
    assert saved["point"] == {"beta": 0.5} and saved["train"]["beta"] == 0.5 and saved["train"]["max_steps"] == 20


def test_final_eval_even_when_steps_do_not_divide(tiny_model_path, tmp_path):
    spec = parse_spec(small_spec("uneven", results_dir=str(tmp_path), train={"max_steps": 7, "eval_steps": 5}))
    reports = []
    run_trial(TrialContext(spec=spec, model_path=str(tiny_model_path)), {"beta": 0.1}, report=reports.append)
    assert reports[-1]["global_step"] == 7 and "eval_rewards/accuracies" in reports[-1]


def _four_bit(tmp_path, name, evals: bool):
    train = {"max_steps": 8, "logging_steps": 1, "learning_rate": 1e-3}
    train.update({"eval_strategy": "steps", "eval_steps": 2} if evals else {"eval_strategy": "no"})
    spec = parse_spec(small_spec(name, results_dir=str(tmp_path), quantization="4bit", train=train))
    return spec


def test_4bit_cpu_eval_keeps_training(tiny_model_path, tmp_path, monkeypatch):
    """Regression test for the bitsandbytes 0.50.2 CPU bug (see sweep.trial.model.disable_bnb_cpu_repack):
    after an eval, 4-bit training must still update the adapter, so a run with evals every 2
    steps trains exactly like a run without evals."""
    import bitsandbytes.nn.modules as bnb_modules

    def ctx(spec):
        return TrialContext(spec=spec, model_path=str(tiny_model_path))

    with_evals = run_trial(ctx(_four_bit(tmp_path, "q_evals", True)), {"beta": 0.5})
    without = run_trial(ctx(_four_bit(tmp_path, "q_plain", False)), {"beta": 0.5})
    assert with_evals["train_loss"] == pytest.approx(without["train_loss"], abs=1e-6)
    assert with_evals["loss"] == pytest.approx(without["loss"], abs=1e-6)

    if not bnb_modules.has_avx512bf16():
        pytest.skip("this CPU lacks AVX512-BF16: the bug cannot show here")
    # Without the workaround the bug is real on this CPU: evals change (stall) training.
    monkeypatch.setattr("sweep.trial.run.disable_bnb_cpu_repack", lambda model: 0)
    from sweep.trial import kept_model

    kept_model._BASE.clear()  # a freshly loaded base: the warm one already carries the workaround's flag
    broken = run_trial(ctx(_four_bit(tmp_path, "q_broken", True)), {"beta": 0.5})
    assert broken["train_loss"] != pytest.approx(without["train_loss"], abs=1e-6)


# SimPO's and ORPO's trainers, metrics and reports:
# tests/integration/test_judge.py::test_simpo_and_orpo_also_get_dpo_accuracy_against_the_base
# (full precision) and tests/{unit/trial,integration}/test_gpu_shaped.py (4-bit, bf16).
@pytest.mark.parametrize("loss_type,trainer", [("kto", "KTOTrainer")])
def test_other_loss_families_train_with_their_trainers_and_log_core_metrics(
    tiny_model_path, tmp_path, loss_type, trainer
):
    spec = parse_spec(
        small_spec(
            f"fam_{loss_type}",
            results_dir=str(tmp_path),
            axes={"loss_type": [loss_type]},
            train={"max_steps": 6, "eval_steps": 3},
        )
    )
    reports = []
    metrics = run_trial(
        TrialContext(spec=spec, model_path=str(tiny_model_path)), {"loss_type": loss_type}, report=reports.append
    )
    saved = json.loads(next((tmp_path / f"fam_{loss_type}" / "trials").glob("*/trial_config.json")).read_text())
    assert saved["trainer"].endswith(trainer)
    # The same core names as DPO trials, so every family lands in one table and ranks by one metric.
    for key in (
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "eval_loss",
        "eval_rewards/margins",
        "eval_rewards/accuracies",
    ):
        assert key in metrics, key
    assert 0 < metrics["eval_rewards/accuracies"] <= 1 and [r["global_step"] for r in reports] == [3, 6]
    assert all("eval_rewards/accuracies" in r for r in reports)


def test_paired_eval_measures_against_the_base_model_not_a_copy_of_the_adapter(tiny_model_path):
    """TRL's DPOTrainer, given a PeftModel, adds a "ref" copy of the adapter as the reference;
    `PairedEval` removes it (else every reward is 0 and a KTO trainer sharing the model would
    measure against the copy too)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sweep.data import load_preference_data
    from sweep.spec.load import DatasetSpec
    from sweep.trial.evaluation import PairedEval

    pairs = load_preference_data(DatasetSpec(max_eval_rows=32))["eval"]
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_path), LoraConfig(r=4, target_modules="all-linear")
    )
    scorer = PairedEval(
        model, AutoTokenizer.from_pretrained(tiny_model_path), pairs, beta=0.5, max_length=128, batch_size=16, cpu=True
    )
    assert list(model.peft_config) == ["default"]
    fresh = scorer()  # LoRA B starts at zero: the policy is the base model
    assert fresh["eval_rewards/margins"] == 0 and fresh["eval_rewards/accuracies"] == 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    moved = scorer()
    assert moved["eval_rewards/margins"] != 0 and moved["eval_rewards/chosen"] != 0


def test_stop_on_nonfinite_false_lets_a_diverging_trial_train_to_its_last_step(tiny_model_path, tmp_path):
    """discopop with tau=0 divides by zero: NaN from the first step. By default the trial stops
    there as FAILED; `stop_on_nonfinite: false` trains on to max_steps (the user's choice)."""
    train = {"loss_type": "discopop", "discopop_tau": 0.0, "max_steps": 4, "eval_steps": 4}
    guarded = parse_spec(small_spec("guarded", results_dir=str(tmp_path / "on"), train=train, axes={}))
    with pytest.raises(Exception, match="is not finite at step 1"):
        run_trial(TrialContext(spec=guarded, model_path=str(tiny_model_path)), {})
    unguarded = parse_spec(
        small_spec("unguarded", results_dir=str(tmp_path / "off"), train=train, axes={}, stop_on_nonfinite=False)
    )
    metrics = run_trial(TrialContext(spec=unguarded, model_path=str(tiny_model_path)), {})
    assert metrics["global_step"] == 4
    assert not math.isfinite(metrics["eval_loss"]) or not math.isfinite(metrics["loss"])
