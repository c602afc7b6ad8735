"""Another TRL version: a trial trains without the shared reference, with one warning."""

from __future__ import annotations

import pytest

from sweep import compat
from sweep.spec.load import parse_spec
from tests.conftest import small_spec


def test_another_trl_trains_without_the_shared_reference(tiny_model_path, tmp_path, monkeypatch, capsys):
    """A trial with TRL at another version computes its own reference log-probs, says so once,
    and trains to the metrics of one that shared them."""
    from sweep.trial.run import TrialContext, run_trial

    spec = parse_spec(small_spec("t", results_dir=str(tmp_path), train={"max_steps": 4, "eval_steps": 4}))
    ctx = TrialContext(spec=spec, model_path=str(tiny_model_path))
    shared = run_trial(ctx, {"beta": 0.1})
    real = compat.installed
    monkeypatch.setattr(compat, "installed", lambda lib: "1.17.0" if lib == "trl" else real(lib))
    monkeypatch.setattr(compat, "_WARNED", set())
    own = run_trial(ctx, {"beta": 0.1})
    assert "time/reference_loaded_s" in shared or "time/reference_computed_s" in shared
    assert not any(k.startswith("time/reference") for k in own)
    for key in ("loss", "eval_rewards/accuracies", "eval_rewards/margins"):
        assert own[key] == pytest.approx(shared[key], abs=1e-4), key
    said = capsys.readouterr().out  # a trial's output (its trial.log in a sweep)
    assert said.count("warning: the shared reference log-probs (share_reference) is off") == 1
