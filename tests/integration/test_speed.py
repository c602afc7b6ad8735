"""Speed without changing results: reference log-probs computed once per sweep and shared,
warm workers reusing the loaded base model, and early stopping that ends runs cleanly."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from sweep.runtime import planned_rows, shared_cache
from sweep.spec.load import parse_spec
from sweep.trial import kept_model
from sweep.trial.run import TrialContext, run_trial
from tests.conftest import REPO, imported_modules, mlflow_store, probe, run_cli, small_spec, write_spec

COMPARED = (
    "loss",
    "rewards/margins",
    "rewards/accuracies",
    "eval_loss",
    "eval_rewards/margins",
    "eval_rewards/accuracies",
)


def _trial(tmp_path, model, point, **spec_changes):
    spec = parse_spec(
        small_spec("speed", results_dir=str(tmp_path), train={"max_steps": 8, "eval_steps": 4}, **spec_changes)
    )
    return run_trial(TrialContext(spec=spec, model_path=str(model)), point)


def _caches(tmp_path):
    return [p for p in (tmp_path / "cache").glob("ref-*") if p.is_dir()]


def _computed_rows(cache, split: str = "train", column: str = "ref_chosen_logps") -> set[int]:
    """Rows of the cached `split` that have a reference value (not NaN): train rows by their
    index in the train split, eval rows by position."""
    cached = shared_cache.load_reference(cache)[split]
    ids = cached[planned_rows.ROW] if planned_rows.ROW in cached.column_names else range(len(cached))
    return {i for i, v in zip(ids, cached[column], strict=True) if not math.isnan(v)}


def test_shared_reference_is_computed_once_and_changes_no_metric(tiny_model_path, tmp_path):
    inline = _trial(tmp_path, tiny_model_path, {"beta": 0.3, "loss_type": "sigmoid"}, share_reference=False)
    first = _trial(tmp_path, tiny_model_path, {"beta": 0.3, "loss_type": "sigmoid"})
    assert "time/reference_computed_s" in first
    for k in COMPARED:
        assert first[k] == pytest.approx(inline[k], abs=1e-4), k
    # Only the rows training reads: 8 steps x batch 8 of the 400 train pairs (and all eval pairs).
    (cache,) = _caches(tmp_path)
    rows = _computed_rows(cache)
    assert len(rows) == 64
    assert _computed_rows(cache, "eval") == set(range(64))  # small_spec's max_eval_rows
    # Another loss, beta and learning rate read the same rows: loaded, not recomputed.
    other = _trial(tmp_path, tiny_model_path, {"beta": 0.05, "loss_type": "ipo", "learning_rate": 1e-3})
    assert "time/reference_loaded_s" in other and "time/reference_computed_s" not in other
    # A damaged cache (a byte altered, a file cut short) is computed again, never trained on.
    (arrow,) = (cache / "train").glob("*.arrow")
    for damage in ("altered", "truncated"):
        data = bytearray(arrow.read_bytes())
        if damage == "altered":
            data[len(data) // 2 : len(data) // 2 + 8] = b"\x00" * 8
        arrow.write_bytes(data if damage == "altered" else data[: len(data) // 2])
        again = _trial(tmp_path, tiny_model_path, {"beta": 0.3, "loss_type": "sigmoid"})
        assert "time/reference_computed_s" in again, damage
        assert all(again[k] == pytest.approx(first[k], abs=1e-6) for k in COMPARED), damage
        assert shared_cache.load_reference(cache) is not None  # whole again
    # Another seed reads other rows: only those are computed, into the same cache.
    reseeded = _trial(tmp_path, tiny_model_path, {"beta": 0.3, "loss_type": "sigmoid", "seed": 3})
    assert "time/reference_computed_s" in reseeded and len(_caches(tmp_path)) == 1
    grown = _computed_rows(cache)
    assert rows < grown and 64 < len(grown) < 128
    # What the values depend on changes the key: a new pass, never a wrong reuse.
    shorter = _trial(tmp_path, tiny_model_path, {"beta": 0.3, "loss_type": "sigmoid", "max_length": 96})
    assert "time/reference_computed_s" in shorter
    assert len(_caches(tmp_path)) == 2
    # Losses without a reference skip it.
    simpo = _trial(tmp_path, tiny_model_path, {"loss_type": "simpo"})
    assert not any(k.startswith("time/reference") for k in simpo)


def test_a_trial_tokenises_only_the_rows_it_reads_and_trains_as_over_the_whole_split(
    tiny_model_path, tmp_path, monkeypatch
):
    """Only the train rows a trial reads are tokenised and given reference log-probs, read in
    the order its sampler would draw them from the whole split: metrics, epochs and reference
    values are those of a trial that tokenised every row. A trial reading more (more steps)
    adds just the rows the cache lacks; another seed reads its own rows, trained as before."""

    def cached(results) -> dict[int, list[float]]:  # the DPO cache's rows (KTO's has its own)
        (split,) = (
            c for c in map(shared_cache.load_reference, _caches(results)) if "ref_chosen_logps" in c["train"].features
        )
        split = split["train"]
        columns = zip(split[planned_rows.ROW], split["ref_chosen_logps"], split["ref_rejected_logps"], strict=True)
        return {row: [c, r] for row, c, r in columns}

    # KTO without a KL term draws its unpaired rows at random too
    points = [{"beta": 0.3}, {"beta": 0.3, "seed": 3}, {"beta": 0.3, "loss_type": "apo_zero_unpaired"}]
    with monkeypatch.context() as m:
        m.setattr(planned_rows, "plan_rows", lambda n, args: None)  # every row, as TRL alone tokenises them
        whole = [_trial(tmp_path / "whole", tiny_model_path, p) for p in points]
    everything = cached(tmp_path / "whole")
    assert len(everything) == 400
    first = _trial(tmp_path / "planned", tiny_model_path, points[0])
    read = cached(tmp_path / "planned")
    assert len(read) == 64  # 8 steps x batch 8
    for row, values in read.items():
        assert values == pytest.approx(everything[row], abs=1e-6), row
    for k in (*COMPARED, "epoch"):
        assert first[k] == pytest.approx(whole[0][k], abs=1e-6), k

    computed = []
    ref_values = shared_cache._ref_values
    monkeypatch.setattr(
        shared_cache, "_ref_values", lambda t, split, rows: computed.append(len(rows)) or ref_values(t, split, rows)
    )
    longer = _trial(tmp_path / "planned", tiny_model_path, {**points[0], "max_steps": 16})
    assert "time/reference_computed_s" in longer and longer["global_step"] == 16
    assert set(read) < set(cached(tmp_path / "planned")) and len(cached(tmp_path / "planned")) == 128
    assert sum(computed) == 64  # the 64 rows the first 8 steps had not read; the eval split was cached

    for point, alone in zip(points[1:], whole[1:], strict=True):
        planned = _trial(tmp_path / "planned", tiny_model_path, point)
        for k in ("loss", "eval_loss", "rewards/margins", "epoch"):
            assert planned[k] == pytest.approx(alone[k], abs=1e-6), (point, k)


def test_planned_rows_that_tokenising_drops_are_replaced_by_the_next_ones(tiny_model_path, tmp_path, capsys):
    """With max_length 18, TRL drops the ~30% of pairs whose prompt fills it: the trial tops
    its planned rows up with the next ones in its order, says how many it skipped, and trains
    every step on rows with reference log-probs."""
    done = _trial(tmp_path, tiny_model_path, {"beta": 0.3, "max_length": 18})
    assert done["global_step"] == 8
    (cache,) = _caches(tmp_path)
    assert len(_computed_rows(cache)) == 64
    skipped = re.search(
        r"warning: (\d+) of the first (\d+) train rows this trial reads have a prompt", capsys.readouterr().out
    )
    assert skipped and int(skipped[2]) - int(skipped[1]) >= 64 and int(skipped[1]) > 0


def test_trials_starting_together_split_the_reference_pass(tiny_model_path, tmp_path, monkeypatch):
    """The pass is cut into parts; a part another trial holds (one that started at the same
    time) is waited for and read, not computed again, and the values are the same."""
    computed = []
    ref_values = shared_cache._ref_values

    def recorded(trainer, split, rows):  # the rows' ids, as parts are named
        computed.append(
            list(split.select(rows)[planned_rows.ROW]) if planned_rows.ROW in split.column_names else list(rows)
        )
        return ref_values(trainer, split, rows)

    monkeypatch.setattr(shared_cache, "_ref_values", recorded)
    point = {"beta": 0.3, "loss_type": "sigmoid", "per_device_eval_batch_size": 8}
    alone = _trial(tmp_path / "a", tiny_model_path, point)
    parts, computed[:] = list(computed), []
    (cache,) = _caches(tmp_path / "a")
    assert len(parts) == 4 + 4  # 64 train rows and 64 eval rows, in parts of two eval batches (16 rows)
    assert sorted(sum(parts[:4], [])) == sorted(_computed_rows(cache))

    # Another trial (a process) holds the first part when this one starts, and writes it 3 s later.
    lock, result = shared_cache.part_files(
        shared_cache.parts_folder(tmp_path / "b" / "cache" / cache.name), "train", parts[0]
    )
    lock.parent.mkdir(parents=True)
    other = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, shutil; from filelock import FileLock\n"
            "with FileLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(3); shutil.copy(sys.argv[2], sys.argv[3])",
            str(lock),
            str(shared_cache.part_files(shared_cache.parts_folder(cache), "train", parts[0])[1]),
            str(result),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdout.readline().strip() == "held"
    together = _trial(tmp_path / "b", tiny_model_path, point)
    assert other.wait(timeout=60) == 0
    assert computed == parts[1:]  # everything but the other trial's part
    for k in COMPARED:
        assert together[k] == pytest.approx(alone[k], abs=1e-6), k


def test_kto_shares_its_reference_and_its_kl_term_changes_no_metric(tiny_model_path, tmp_path):
    """KTO's reference (each completion's log-prob, and each mismatched KL completion's) is
    shared like DPO's; its key also holds what KTO's rows depend on: seed and KL term."""
    point = {"beta": 0.3, "loss_type": "kto"}
    inline = _trial(tmp_path, tiny_model_path, point, share_reference=False)
    first = _trial(tmp_path, tiny_model_path, point)
    assert "time/reference_computed_s" in first
    for k in (
        "loss",
        "rewards/margins",
        "kl",
        "eval_loss",
        "eval_kl",
        "eval_rewards/margins",
        "eval_rewards/accuracies",
    ):
        assert first[k] == pytest.approx(inline[k], abs=1e-4), k
    assert first["eval_kl"] > 0  # the KL term was estimated, from the cached KL column too
    (cache,) = _caches(tmp_path)
    # 8 steps x batch 8 unpaired rows; every eval row (64 pairs = 128 completions); both columns.
    assert len(_computed_rows(cache, "train", "ref_logps")) == 64
    assert _computed_rows(cache, "train", "ref_KL_logps") == _computed_rows(cache, "train", "ref_logps")
    assert len(_computed_rows(cache, "eval", "ref_KL_logps")) == 128
    other = _trial(tmp_path, tiny_model_path, {"beta": 0.1, "loss_type": "kto", "learning_rate": 1e-3})
    assert "time/reference_loaded_s" in other and "time/reference_computed_s" not in other
    # Another shuffle of the unpaired rows, or no KL term: other values, other caches.
    reseeded = _trial(tmp_path, tiny_model_path, {**point, "seed": 3})
    no_kl = _trial(tmp_path, tiny_model_path, {**point, "loss_type": "apo_zero_unpaired"})
    assert "time/reference_computed_s" in reseeded and "time/reference_computed_s" in no_kl
    assert len(_caches(tmp_path)) == 3


def test_a_trainer_reading_beyond_its_planned_rows_fails_loudly(tiny_model_path, tmp_path, monkeypatch):
    """Were a plan ever shorter than what the trainer's sampler reads, the trial fails before
    its first step; it never trains on a stand-in row or a row without reference log-probs."""
    plan_rows = planned_rows.plan_rows
    monkeypatch.setattr(
        planned_rows, "plan_rows", lambda n, args: dataclasses.replace(plan_rows(n, args), needed=args.max_steps * 4)
    )
    with pytest.raises(RuntimeError, match="the trainer reads train row 63, beyond the 32 planned"):
        _trial(tmp_path, tiny_model_path, {"beta": 0.3})


def test_warm_worker_reuses_the_base_model_and_reloads_it_when_its_weights_changed(tiny_model_path, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    first = _trial(tmp_path, tiny_model_path, {"beta": 0.1})
    ((cached, fingerprint, _),) = kept_model._BASE.values()
    fresh = kept_model.weights_fingerprint(AutoModelForCausalLM.from_pretrained(tiny_model_path))
    assert fingerprint == fresh and kept_model.weights_fingerprint(cached) == fresh  # trained on, unchanged
    assert not any("lora" in name for name, _ in cached.named_parameters())  # the adapter is off
    _trial(tmp_path, tiny_model_path, {"beta": 0.5, "loss_type": "kto"})
    assert next(iter(kept_model._BASE.values()))[0] is cached  # the next trial used the same object
    assert kept_model.weights_fingerprint(cached) == fresh

    # A trial that died half-way may leave the kept model altered: the next one loads it afresh
    # and trains exactly as on a fresh model.
    with torch.no_grad():
        next(cached.parameters()).add_(0.01)
    again = _trial(tmp_path, tiny_model_path, {"beta": 0.1})
    ((reloaded, _, _),) = kept_model._BASE.values()
    assert reloaded is not cached and kept_model.weights_fingerprint(reloaded) == fresh
    keys = ("loss", "eval_loss", "eval_rewards/margins", "eval_rewards/accuracies")
    assert {k: again[k] for k in keys} == {k: first[k] for k in keys}


@pytest.mark.parametrize("scheduler", ["asha", "median"])
def test_early_stopping_stops_trailing_trials_and_their_runs_end_killed_with_metrics(
    tmp_path, tiny_model_path, scheduler
):
    """Ray Tune's ASHA and median stopping rule, trials one at a time: the lr=1e-7 points trail
    the lr=1e-3 ones that ran before them and are stopped."""
    spec = small_spec(
        scheduler,
        axes={"learning_rate": [1.0e-3, 1.0e-7], "beta": [0.1, 0.3]},
        max_concurrent_trials=1,
        scheduler={"type": scheduler, "grace_period": 1, "reduction_factor": 2},
        samples={"prompts": 0},
        save="none",
        metric="eval_rewards/margins",  # sign-based accuracy rewards even a 1e-7 step in the right direction
    )
    del spec["train"]["learning_rate"]
    proc = run_cli("run", str(write_spec(tmp_path / "s.yaml", spec)), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, parents, children = mlflow_store(tmp_path, scheduler)
    assert len(children) == 4 and parents[0].info.status == "FINISHED"
    assert {r.info.status for r in children} <= {"FINISHED", "KILLED"}  # never left RUNNING
    stopped = [r for r in children if r.data.tags.get("sweep.stopped_early")]
    assert stopped, proc.stdout
    assert {r.data.params["sweep.learning_rate"] for r in stopped} == {"1e-07"}  # the trailing ones, only
    for r in stopped:
        assert r.info.status == "KILLED" and "eval_rewards/accuracies" in r.data.metrics
        assert r.data.metrics["global_step"] < 12
    assert "stopped early by the scheduler" in proc.stdout
    # The swept learning rate, not the last one Trainer's schedule logged under the same name.
    assert set(pd.read_csv(tmp_path / "results" / scheduler / "summary.csv")["learning_rate"]) == {1.0e-3, 1.0e-7}
    # Trials run in Ray workers with their own working directory: still one shared reference pass.
    assert len(_caches(tmp_path / "results")) == 1
    assert sum("time/reference_computed_s" in r.data.metrics for r in children) == 1


def test_a_trial_paused_at_its_checkpoint_resumes_to_the_metrics_of_an_unpaused_run(tmp_path, tiny_model_path):
    """`scheduler: halving` pauses trials at a rung: the trial reports a Trainer checkpoint
    with every eval, and resumed from one it trains on exactly as if never paused (adapter,
    optimizer, LR schedule, RNG and data position restored)."""
    halving = parse_spec(
        small_spec(
            "pause", results_dir=str(tmp_path), train={"max_steps": 12, "eval_steps": 4}, scheduler={"type": "halving"}
        )
    )
    kept = tmp_path / "kept"  # what Ray Tune keeps of the reported checkpoint

    def pause_at_first_checkpoint(metrics, checkpoint_dir=None):
        assert checkpoint_dir is not None and metrics["global_step"] == 4
        shutil.copytree(checkpoint_dir, kept)
        raise SystemExit  # how Ray Tune stops a trial's function at a report

    with pytest.raises(SystemExit):
        run_trial(
            TrialContext(spec=halving, model_path=str(tiny_model_path)), {"beta": 0.5}, report=pause_at_first_checkpoint
        )
    assert (kept / "optimizer.pt").exists() and (kept / "adapter_model.safetensors").exists()
    assert not list((tmp_path / "pause" / "trials").glob("*/checkpoint-*"))  # the trial's own copies are gone

    reports = []
    resumed = run_trial(
        TrialContext(spec=halving, model_path=str(tiny_model_path)),
        {"beta": 0.5},
        report=lambda m, checkpoint_dir=None: reports.append((m["global_step"], checkpoint_dir)),
        resume_from=str(kept),
    )
    assert [step for step, _ in reports] == [8, 12] and reports[0][1] and reports[-1][1] is None  # then the final one

    plain = parse_spec(small_spec("plain", results_dir=str(tmp_path), train={"max_steps": 12, "eval_steps": 4}))
    unpaused = run_trial(TrialContext(spec=plain, model_path=str(tiny_model_path)), {"beta": 0.5})
    assert resumed["global_step"] == unpaused["global_step"] == 12
    for key in COMPARED:
        assert math.isclose(resumed[key], unpaused[key], rel_tol=1e-4, abs_tol=1e-5), (key, resumed[key], unpaused[key])


def test_halving_compares_every_trial_at_each_rung_and_resumes_the_best(tmp_path, tiny_model_path):
    """Synchronous successive halving over 4 points, halving at every 3-step eval: all 4 reach
    the first rung, the best 2 go on from their checkpoints, the best of those to the end.
    One MLflow run per point, the resumed ones carrying on where they paused."""
    spec = small_spec(
        "halving",
        axes={"learning_rate": [5.0e-4, 1.0e-3], "beta": [0.1, 0.5]},
        train={"eval_steps": 3},
        scheduler={"type": "halving", "grace_period": 1, "reduction_factor": 2},
    )
    del spec["train"]["learning_rate"]
    proc = run_cli("run", str(write_spec(tmp_path / "halving.yaml", spec)), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    c, parents, children = mlflow_store(tmp_path, "halving")
    assert len(children) == 4 and parents[0].info.status == "FINISHED"  # one run per point
    metric = "eval_rewards/accuracies"
    history = {r.info.run_id: {m.step: m.value for m in c.get_metric_history(r.info.run_id, metric)} for r in children}
    steps = {r.info.run_id: sorted(history[r.info.run_id]) for r in children}
    assert sorted(map(len, steps.values())) == [1, 1, 2, 4], steps  # 3, 3, 6 and 12 steps trained
    went_on = [history[r.info.run_id][3] for r in children if len(steps[r.info.run_id]) > 1]
    stopped = [history[r.info.run_id][3] for r in children if len(steps[r.info.run_id]) == 1]
    assert min(went_on) >= max(stopped), history  # the best two at step 3 went on (either of a tie may)
    winner = next(r for r in children if len(steps[r.info.run_id]) == 4)
    assert winner.info.status == "FINISHED" and "sweep.stopped_early" not in winner.data.tags
    assert history[winner.info.run_id][6] >= max(h[6] for h in history.values() if 6 in h)  # the best at step 6
    assert steps[winner.info.run_id] == [3, 6, 9, 12] and winner.data.metrics["global_step"] == 12
    for r in children:
        if r is not winner:
            assert r.info.status == "KILLED" and r.data.tags.get("sweep.stopped_early") == "true"
    summary = pd.read_csv(tmp_path / "results" / "halving" / "summary.csv")
    assert sorted(summary["status"]) == ["FINISHED"] + ["STOPPED_EARLY"] * 3


def test_processes_that_load_no_quantized_model_skip_bitsandbytes(tmp_path):
    """bitsandbytes costs every process that imports the stack ~1.3 s (PEFT imports it):
    the driver of `run`/`plan` and the workers of a sweep that never quantizes skip it, and
    a sweep that quantizes somewhere keeps it."""
    from sweep.trial.model import quantizes

    def spec(**changes):
        return parse_spec(small_spec("bnb", results_dir=str(tmp_path), **changes))

    assert not quantizes(spec(), cuda=False)  # auto: plain LoRA on CPU
    assert quantizes(spec(), cuda=True)  # auto: QLoRA where there is CUDA
    assert not quantizes(spec(quantization="none"), cuda=True)
    assert quantizes(spec(quantization="4bit"), cuda=False)
    assert quantizes(spec(quantization="none", axes={"bnb_4bit_quant_type": ["nf4", "fp4"]}), cuda=False)

    # The driver of `plan` builds every point's configs (PEFT's, transformers', TRL's) without it,
    # with a new config catalogue (a fresh cache) and a cached one.
    env = {**os.environ, "PYTHONPATH": str(REPO), "SWEEP_CACHE": str(tmp_path / "cache")}
    for cached in (False, True):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "sweep", "plan", str(REPO / "search_spaces" / "beta_grid.yaml")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0 and "8 trials" in out.stdout, out.stderr[-2000:]
        imported = imported_modules(out.stderr)
        # (a blocked import is still listed, as one module with nothing under it)
        assert "peft" in imported and not any(name.startswith("bitsandbytes.") for name in imported)

    # Ray workers, as Tune's get them: importing the trial code imports PEFT, not bitsandbytes.
    # A Ray started without it (`run` starts one as soon as the spec is valid, on a guess
    # about GPUs) is started again when the sweep turns out to quantize.
    code = (
        "from sweep.runtime import cluster\n"
        "import os, sys\n"
        "for quantized in (False, True):\n"
        "    cluster.start(None, quantized=quantized).result()\n"
        "    import ray\n"
        "    @ray.remote\n"
        "    def loaded():\n"
        "        import sys, sweep.driver.orchestrate, sweep.trial.callbacks\n"
        "        return 'peft' in sys.modules, sys.modules.get('bitsandbytes') is not None\n"
        "    print(quantized, *ray.get(loaded.remote()), 'SWEEP_SKIP_BITSANDBYTES' in os.environ)\n"
        "cluster.stop()\n"
    )
    out = probe(code, tmp_path)
    # (the workers' switch is in Ray's environment, not left in the driver's)
    assert out.stdout.split("\n")[-3:-1] == ["False True False False", "True True True False"], (
        out.stdout + out.stderr[-2000:]
    )


def test_trials_run_in_the_workers_ray_prestarted_with_the_stack_imported(tmp_path):
    """A local Ray prestarts its workers, and as many as trials may run at once import the
    stack while the driver reads the spec, checks the data and opens MLflow (sweep/runtime/worker_preload.py);
    the rest stay light. Tune's trials must then run in them, not in fresh processes that
    start importing only once a trial is scheduled (~2 s to the first step on 2 cores).
    Ray Tune 2.60 gives every trial actor a runtime_env, which keeps it off prestarted
    workers: the run without `trials_on_prestarted_workers` shows that."""
    code = (
        "import os, sys, time\n"
        "from sweep.runtime import cluster\n"
        "cluster.start(None, quantized=False, warm_workers=1).result()\n"
        "import psutil\n"
        "from ray import tune\n"
        "def workers():\n"
        "    cmds = {p.pid: ' '.join(p.cmdline()) for p in psutil.Process().children(recursive=True)}\n"
        "    return {pid for pid, cmd in cmds.items() if 'default_worker' in cmd or cmd.startswith('ray::IDLE')}\n"
        "def warm(pid):\n"
        "    return 'libtorch_cpu' in open(f'/proc/{pid}/maps').read()\n"
        "deadline = time.time() + 120\n"
        "while not any(warm(p) for p in workers()) and time.time() < deadline:\n"
        "    time.sleep(0.5)\n"
        "time.sleep(8)  # Tune starts this long after Ray in a sweep on 2 cores: Ray must not have killed them\n"
        "prestarted = workers()\n"
        "print('warm workers', sum(warm(p) for p in prestarted))\n"
        "def trial(config):\n"
        "    import gc\n"
        "    tune.report({'pid': os.getpid(), 'preloaded': 'trl.trainer.dpo_trainer' in sys.modules,\n"
        "                 'collecting': gc.isenabled(), 'frozen': gc.get_freeze_count()})\n"
        "def run(name):\n"
        "    config = tune.RunConfig(name=name, storage_path=sys.argv[1], verbose=0)\n"
        "    return [r.metrics for r in tune.Tuner(trial, param_space={'x': tune.grid_search([0, 1])}, run_config=config).fit()]\n"
        "with cluster.trials_on_prestarted_workers(None):\n"
        "    warm_runs = run('warm')\n"
        "cold_runs = run('cold')\n"
        "print('warm', all(m['pid'] in prestarted for m in warm_runs), any(m['preloaded'] for m in warm_runs))\n"
        "print('warm gc', all(m['collecting'] for m in warm_runs), all(m['frozen'] > 100_000 for m in warm_runs if m['preloaded']))\n"
        "print('cold', any(m['pid'] in prestarted for m in cold_runs))\n"
        "cluster.stop()\n"
    )
    out = probe(code, tmp_path, str(tmp_path))
    said = [line for line in out.stdout.splitlines() if line.startswith(("warm", "cold"))]
    # The warm worker imported with its garbage collector paused (sweep/runtime/startup.py), then
    # turned it back on for the trials, with what it imported frozen out of its scans.
    assert said == ["warm workers 1", "warm True True", "warm gc True True", "cold False"], (
        out.stdout + out.stderr[-3000:]
    )


def test_a_local_ray_stops_its_autoscaler_monitor_before_the_gcs(tmp_path):
    """Ray 2.60's shutdown kills the GCS first; its autoscaler monitor's SIGTERM handler then
    reports to the dead GCS until Ray kills it 1 s later, at the end of every sweep.
    `cluster.stop` kills the monitor first (compat.ray_internals.kill_autoscaler_monitor), and leaves no
    process of the local Ray behind."""
    code = (
        "import psutil\n"
        "from ray._private import node\n"
        "from sweep.runtime import cluster\n"
        "cluster.start(None, quantized=False).result()\n"
        "started = psutil.Process().children(recursive=True)\n"
        "order = []\n"
        "kill = node.Node._kill_process_impl\n"
        "def recorded(self, process_type, *args, **kwargs):\n"
        "    if process_type in self.all_processes and self.all_processes[process_type][0].process.poll() is None:\n"
        "        order.append(process_type)\n"
        "    return kill(self, process_type, *args, **kwargs)\n"
        "node.Node._kill_process_impl = recorded\n"
        "cluster.stop()\n"
        "print('order', *order)\n"
        "gone, alive = psutil.wait_procs(started, timeout=10)  # (workers exit as their raylet goes)\n"
        "print('left', len(alive))\n"
    )
    out = probe(code, tmp_path)
    said = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("order", "left")))
    assert said.get("order", "").split()[:1] == ["monitor"] and "gcs_server" in said["order"], (
        out.stdout + out.stderr[-3000:]
    )
    assert said["left"] == "0", out.stdout + out.stderr[-3000:]
