"""The spec validator: shipped specs load, bad specs fail with one clear line and exit code 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.cli import main
from sweep.spec.families import DPO_LOSS_TYPES
from sweep.spec.load import SpecError, load_spec, parse_spec
from sweep.spec.points import point_id
from tests.conftest import REPO, imported_modules, run_cli, small_spec, write_spec


def test_default_spec_is_the_documented_grid():
    spec = load_spec(REPO / "search_spaces" / "beta_grid.yaml")
    points = spec.points()
    assert len(points) >= 8
    assert {p["loss_type"] for p in points} >= {"sigmoid", "ipo"}
    assert len({p["beta"] for p in points}) >= 4
    assert spec.train["max_steps"] > 0 and spec.train["learning_rate"] > 0
    # every point is distinct and has a stable id
    assert len({point_id(p) for p in points}) == len(points)
    assert point_id({"loss_type": "ipo", "beta": 0.1}) == point_id({"beta": 0.1, "loss_type": "ipo"})


def test_fields_of_all_three_configs_are_settable_by_their_own_names():
    spec = parse_spec(
        small_spec(
            "routing",
            axes={"beta": [0.1], "r": [4, 8], "bnb_4bit_quant_type": ["nf4", "fp4"]},
            train={"learning_rate": "5e-4", "label_smoothing": 0.1, "loss_type": "robust"},
            lora={"lora_alpha": 32, "lora_dropout": 0.05},
            quantization={"mode": "4bit", "bnb_4bit_use_double_quant": False},
        )
    )
    assert spec.train["learning_rate"] == pytest.approx(5e-4)  # YAML reads 5e-4 as a string
    assert len(spec.points()) == 4
    from sweep.trial.configs import build_configs

    _, args, lora, bnb = build_configs(
        spec, {"beta": 0.1, "r": 4, "bnb_4bit_quant_type": "fp4"}, Path("/tmp/x"), cuda=False
    )
    assert (args.beta, args.learning_rate, args.loss_type, args.label_smoothing) == (0.1, 5e-4, ["robust"], 0.1)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (4, 32, 0.05)
    assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "fp4" and not bnb.bnb_4bit_use_double_quant
    assert args.use_cpu and not args.bf16  # CPU: no bf16, as the stack notes say


def test_loss_type_list_matches_installed_trl():
    import inspect

    from trl import DPOTrainer

    source = inspect.getsource(DPOTrainer._compute_loss)
    for name in DPO_LOSS_TYPES:
        assert f'loss_type == "{name}"' in source, name


def test_the_cached_catalogue_is_what_the_installed_libraries_say(tmp_path, monkeypatch):
    """The driver checks specs against a JSON catalogue of the configs' fields; it must hold
    exactly what TRL/PEFT/transformers say, and a damaged cache file is rebuilt."""
    from sweep.spec import catalogue
    from sweep.spec.families import FAMILIES

    configs = tuple((name, family.config) for name, family in FAMILIES.items())
    monkeypatch.setenv("SWEEP_CACHE", str(tmp_path))
    catalogue.catalogue.cache_clear()
    try:
        built = catalogue.catalogue(configs)  # read from the libraries, then written
        (cached,) = tmp_path.glob("catalogue-*.json")
        catalogue.catalogue.cache_clear()
        assert catalogue.catalogue(configs) == built == catalogue._read_libraries(configs)
        assert set(built["families"]) == {"dpo", "kto", "cpo", "orpo"}
        assert {"beta", "loss_type", "max_length"} <= set(built["families"]["dpo"])
        assert {"r", "lora_alpha", "target_modules"} <= set(built["lora"])
        assert "bnb_4bit_quant_type" in built["quantization"]
        cached.write_text("{not json")
        catalogue.catalogue.cache_clear()
        assert catalogue.catalogue(configs) == built and json.loads(cached.read_text()) == built
    finally:
        catalogue.catalogue.cache_clear()


def test_a_spec_is_checked_without_importing_the_trainers(tmp_path):
    """Once the catalogue is cached (by the first run on a machine), validating a spec (good or bad) imports neither TRL nor
    PEFT nor torch: a sweep's driver leaves that CPU to its Ray workers."""
    good = write_spec(tmp_path / "good.yaml", small_spec("ok", axes={"beta": [0.1, 0.5], "r": [4, 8]}))
    bad = write_spec(tmp_path / "bad.yaml", small_spec("bad", train={"eval_strategy": "sometimes"}))
    script = (
        "import sys\n"
        "from sweep.spec.load import SpecError, load_spec\n"
        f"print(len(load_spec({str(good)!r}).points()))\n"
        f"try:\n    load_spec({str(bad)!r})\nexcept SpecError as e:\n    print(e)\n"
        "print(sorted(m for m in ('trl', 'peft', 'torch', 'transformers') if m in sys.modules))\n"
    )
    env = {**os.environ, "SWEEP_CACHE": str(tmp_path / "cache")}
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env) for _ in "12"
    ]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines = proc.stdout.splitlines()
        assert lines[0] == "4"
        assert lines[1].startswith("train.eval_strategy: expected one of no, steps, epoch")
    assert runs[0].stdout.splitlines()[2] == "['peft', 'torch', 'transformers', 'trl']"  # the first builds it
    assert runs[1].stdout.splitlines()[2] == "[]"


BAD_SPECS = [
    # (what is wrong, change to a good spec, field named in the message, words the message must contain)
    ("unknown top-level field", {"axis": {"beta": [0.1]}}, "axis", "did you mean 'axes'"),
    ("missing name", {"name": None}, "name", "required"),
    ("bad name", {"name": "my sweep!"}, "name", "letters"),
    ("unknown axis", {"axes": {"betta": [0.1]}}, "axes.betta", "did you mean 'beta'"),
    (
        "unknown loss type",
        {"axes": {"loss_type": ["sigmoid", "kpo"]}},
        "axes.loss_type[1]",
        "did you mean 'kto'?; valid: sigmoid, hinge, ipo",
    ),
    (
        "KTO in a combined loss",
        {"train": {"loss_type": ["sigmoid", "kto"]}},
        "train.loss_type",
        "take DPO loss types only",
    ),
    (
        "field of no trial's family",
        {"train": {"simpo_gamma": 0.5}},
        "train.simpo_gamma",
        "CPOConfig (loss types simpo, cpo)",
    ),
    (
        "swept field a point ignores",
        {"axes": {"loss_type": ["sigmoid", "simpo"], "simpo_gamma": [0.5, 1.0]}},
        "axes.simpo_gamma",
        "does not apply to loss_type sigmoid",
    ),
    (
        "KTO batch of one",
        {"axes": {"loss_type": ["kto"]}, "train": {"per_device_train_batch_size": 1}},
        "train.per_device_train_batch_size",
        "KTO needs >= 2",
    ),
    (
        "zipped duplicate columns",
        {"axes": {"z": {"zip": {"loss_type": ["ipo", "ipo"], "beta": [0.1, 0.1]}}}},
        "axes.z.zip",
        "identical",
    ),
    ("unknown dataset format", {"dataset": {"format": "hh"}}, "dataset.format", "valid: pairs, transcript"),
    (
        "system column target",
        {"dataset": {"columns": {"instructions": "system"}}},
        "dataset.columns.instructions",
        "system",
    ),
    ("wrong type", {"train": {"learning_rate": "fast"}}, "train.learning_rate", "expected float"),
    (
        "a word for a generation number",
        {"judge": {"prompts": 4, "scorers": ["builtin:verifiable"], "generation": {"temperature": "hot"}}},
        "judge.generation.temperature",
        "must be a valid number, got str 'hot'",
    ),
    (
        "a number for a generation switch",
        {"judge": {"prompts": 4, "scorers": ["builtin:verifiable"], "generation": {"do_sample": 1}}},
        "judge.generation.do_sample",
        "must be a valid boolean, got int 1",
    ),
    ("a switch where a count goes", {"samples": {"prompts": True}}, "samples.prompts", "valid integer, got bool True"),
    ("a number where a column goes", {"dataset": {"columns": {"prompt": 5}}}, "dataset.columns.prompt", "valid string"),
    ("a word nan for a trainer number", {"train": {"learning_rate": "nan"}}, "train.learning_rate", "expected float"),
    ("a misspelt choice", {"search": {"method": "gird"}}, "search.method", "did you mean 'grid'"),
    ("a misspelt section field", {"judge": {"promts": 4}}, "judge.promts", "did you mean 'prompts'"),
    ("beta <= 0", {"axes": {"beta": [0.1, 0.0]}}, "axes.beta[1]", "must be > 0"),
    ("lr <= 0", {"train": {"learning_rate": -1e-5}}, "train.learning_rate", "must be > 0"),
    ("max_steps 0", {"train": {"max_steps": 0}}, "train.max_steps", "must not be 0"),
    ("empty axis", {"axes": {"beta": []}}, "axes.beta", "non-empty list"),
    ("duplicate axis values", {"axes": {"beta": [0.1, 0.1]}}, "axes.beta", "duplicate"),
    ("set twice", {"axes": {"beta": [0.1]}, "train": {"beta": 0.2}}, "axes.beta", "one place"),
    ("reserved field", {"train": {"output_dir": "/tmp"}}, "train.output_dir", "set by sweep"),
    ("unknown train field", {"train": {"max_step": 5}}, "train.max_step", "did you mean 'max_steps'"),
    ("unknown lora field", {"lora": {"rank": 8}}, "lora.rank", "unknown field"),
    ("bad quantization", {"quantization": "2bit"}, "quantization", "valid: auto, 4bit, 8bit, none"),
    ("exo_pair without smoothing", {"axes": {"loss_type": ["exo_pair"]}}, "train.label_smoothing", "must be > 0"),
    ("enum value", {"train": {"eval_strategy": "sometimes"}}, "train.eval_strategy", "one of no, steps, epoch"),
    ("unknown builtin", {"model": "builtin:huge"}, "model", "builtin:tiny"),
    ("bad resources", {"resources": {"cpu": 0}}, "resources.cpu", "must be greater than 0"),
    ("unknown scheduler", {"scheduler": {"type": "hyperband"}}, "scheduler.type", "valid: none, asha, median, halving"),
    (
        "scheduler without evals",
        {"scheduler": {"type": "asha"}, "train": {"eval_strategy": "no"}},
        "train.eval_strategy",
        "compares trials at their evaluations",
    ),
    (
        "halving with a trial limit",
        {"scheduler": {"type": "halving"}, "max_concurrent_trials": 2},
        "max_concurrent_trials",
        "limit concurrency with resources",
    ),
    ("missing dataset file", {"dataset": {"path": "./nope.jsonl"}}, None, None),  # checked at run time
]


@pytest.mark.parametrize(
    "what,change,field,words", [c for c in BAD_SPECS if c[2]], ids=[c[0] for c in BAD_SPECS if c[2]]
)
def test_bad_spec_names_field_and_choices(tmp_path, capsys, what, change, field, words):
    spec = small_spec("bad")
    for key, value in change.items():
        if value is None:
            spec.pop(key)
        elif isinstance(value, dict) and key in spec and key != "axes":
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    path = write_spec(tmp_path / "bad.yaml", spec)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert err.value.field == field
    assert words in str(err.value)
    # Through the CLI: exit code 2, exactly one line on stderr, no traceback.
    assert main(["plan", str(path)]) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:"), out.err
    assert "Traceback" not in out.err


def test_malformed_yaml_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\naxes: {beta: [0.1, 0.2\n")
    assert main(["plan", str(bad)]) == 2
    assert re.match(r"error: spec: invalid YAML at line \d+", capsys.readouterr().err)
    assert main(["plan", str(tmp_path / "missing.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    assert main(["plan", str(binary)]) == 2
    assert "not UTF-8" in capsys.readouterr().err


UNREADABLE_YAML = [
    ("a key twice", "name: x\nname: y\n", "at line 2, column 1: duplicate key 'name' (first at line 1)"),
    ("a nested key twice", "name: x\ntrain:\n  seed: 1\n  seed: 2\n", "duplicate key 'seed' (first at line 3)"),
    ("deep nesting", "name: x\naxes: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 32 levels"),
    (
        "an alias bomb",
        "name: x\na: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
        + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9)),
        "more than 64 aliases",
    ),
    ("a huge file", "name: x\n#" + "x" * (2 << 20) + "\n", "larger than 1 MB"),
]


@pytest.mark.parametrize("case, text, words", UNREADABLE_YAML, ids=[c[0] for c in UNREADABLE_YAML])
def test_yaml_no_person_means_is_refused_in_one_line(tmp_path, capsys, case, text, words):
    """What YAML allows but no person means — a key given twice (the last silently wins), a
    billion laughs, nesting that makes PyYAML recurse, a file no spec is — exits 2 in one line."""
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    assert main(["plan", str(path)]) == 2, case
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: spec: ") and words in line, line
    assert main(["plan", str(REPO / "search_spaces" / "beta_grid.yaml"), "--set", "axes.beta={a: 1, a: 2}"]) == 2
    assert "duplicate key 'a'" in capsys.readouterr().err


def test_yaml_is_loaded_safely(tmp_path, capsys):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    assert main(["plan", str(evil)]) == 2
    assert "invalid YAML" in capsys.readouterr().err


def test_plan_lists_every_trial(capsys):
    assert main(["plan", str(REPO / "search_spaces" / "beta_grid.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "8 trials"
    assert out.count("sigmoid") == 4 and out.count("ipo") == 4


SHIPPED = {"beta_grid": 8, "hf_pref_tuning": 54, "determined_dpo": 9, "neuralhermes": 1, "loss_families": 6}


@pytest.mark.parametrize("name,count", SHIPPED.items())
def test_every_shipped_spec_plans_offline(name, count, capsys):
    """`plan` validates the real-scale specs without a hub (HF_HUB_OFFLINE is set for the session)."""
    assert main(["plan", str(REPO / "search_spaces" / f"{name}.yaml")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == (f"{count} trials" if count > 1 else "1 trial")


def test_hf_study_sweeps_three_families_and_routes_their_fields():
    from sweep.spec.families import family_of

    spec = load_spec(REPO / "search_spaces" / "hf_pref_tuning.yaml")
    assert {family_of(p["loss_type"]).name for p in spec.points()} == {"dpo", "kto"}
    assert sorted({p["beta"] for p in spec.points()}) == [round(0.1 * i, 1) for i in range(1, 10)]
    from sweep.trial.configs import build_configs

    family, args, _, _ = build_configs(
        spec, {"loss_type": "kto", "beta": 0.3, "max_steps": 200}, Path("/tmp/x"), cuda=False
    )
    assert type(args).__name__ == "KTOConfig" and args.loss_type == "kto" and args.beta == 0.3
    spec = load_spec(REPO / "search_spaces" / "loss_families.yaml")
    configs = {}
    for point in spec.points():
        family, args, _, _ = build_configs(spec, point, Path("/tmp/x"), cuda=False)
        configs[str(point["loss_type"])] = args
    assert (
        configs["simpo"].loss_type == "simpo"
        and configs["simpo"].cpo_alpha == 0.0
        and configs["simpo"].simpo_gamma == 0.5
    )
    assert configs["['sigmoid', 'sft']"].loss_weights == [1.0, 0.5]
    assert type(configs["orpo"]).__name__ == "ORPOConfig" and not hasattr(configs["sigmoid"], "simpo_gamma")


def test_run_with_bad_input_writes_nothing(tmp_path):
    """A bad spec stops `run` before any store is touched (data read once Ray is up: BAD_DATA)."""
    spec = small_spec("bad_run", axes={"loss_type": ["kto_pair"]})
    proc = run_cli("run", str(write_spec(tmp_path / "s.yaml", spec)), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "unknown loss type 'kto_pair'" in proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "change, field",
    [
        ({"resources": {"cpu": float("inf")}}, "resources.cpu"),
        ({"resources": {"cpu": 1, "gpu": float("nan")}}, "resources.gpu"),
        ({"scheduler": {"type": "halving", "reduction_factor": float("nan")}}, "scheduler.reduction_factor"),
        ({"axes": {"beta": [0.1, float("inf")]}}, "axes.beta[1]"),
        ({"train": {"max_grad_norm": float("-inf")}}, "train.max_grad_norm"),
        (
            {"judge": {"prompts": 4, "scorers": ["builtin:verifiable"], "generation": {"temperature": float("nan")}}},
            "judge.generation.temperature",
        ),
    ],
)
def test_no_number_in_a_spec_is_nan_or_infinite(tmp_path, capsys, change, field):
    """Any field, ours or TRL's: YAML's .inf and .nan are one line and exit 2 (Ray would wait
    forever for cpu: .inf; halving's rungs ended in a traceback on .nan)."""
    path = write_spec(tmp_path / "odd.yaml", small_spec("odd", **change))
    assert main(["plan", str(path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {field}: must be a finite number, got "), line


@pytest.mark.parametrize(
    "change,says",
    [
        ({"train": {"load_best_model_at_end": True}}, "train: --load_best_model_at_end requires"),
        ({"lora": {"init_lora_weights": "loftq"}}, "lora: `loftq_config` must be specified"),
    ],
)
def test_plan_builds_every_points_configs(tmp_path, capsys, change, says):
    """plan constructs each point's TRL and PEFT configs, so their own rules across fields are
    checked offline too: one line naming the section and the point."""
    path = write_spec(tmp_path / "s.yaml", small_spec("s", axes={"beta": [0.1, 0.5]}, **change))
    assert main(["plan", str(path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {says}") and line.endswith("(at beta=0.1)"), line


def test_sampled_and_zipped_axes_plan(tmp_path, capsys):
    spec = small_spec(
        "searchy",
        axes={
            "loss_type": ["sigmoid", "ipo"],
            "learning_rate": {"loguniform": ["1e-5", 1.0e-3]},
            "r": {"randint": [4, 16]},
            "lora_alpha": {"choice": [16, 32]},
            "schedule": {"zip": {"max_steps": [20, 40], "warmup_steps": [2, 4]}},
        },
        search={"method": "random", "num_samples": 3},
    )
    del spec["train"]["learning_rate"], spec["train"]["max_steps"]
    path = write_spec(tmp_path / "s.yaml", spec)
    loaded = load_spec(path)
    assert loaded.axis_names() == ["loss_type", "max_steps", "warmup_steps", "learning_rate", "r", "lora_alpha"]
    assert loaded.sampled["learning_rate"] == {"loguniform": [1e-5, 1e-3]}
    assert loaded.points() == [
        {"loss_type": lt, "max_steps": ms, "warmup_steps": ws}
        for lt in ("sigmoid", "ipo")
        for ms, ws in ((20, 2), (40, 4))
    ]
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "12 trials" and out[-2] == "search: random, 3 samples x 4 grid points"
    assert "learning_rate: loguniform in [1e-05, 0.001]" in out and "r: randint in [4, 16]" in out

    spec["search"] = {"method": "optuna", "num_samples": 5}
    del spec["axes"]["schedule"]
    assert parse_spec(spec).num_trials() == 5


BAD_AXES = [
    (
        "low >= high",
        {"learning_rate": {"uniform": [1e-3, 1e-4]}},
        {"method": "random"},
        "axes.learning_rate.uniform",
        "low < high",
    ),
    (
        "log of zero",
        {"label_smoothing": {"loguniform": [0.0, 0.1]}},
        {"method": "random"},
        "axes.label_smoothing.loguniform",
        "low > 0",
    ),
    ("randint floats", {"r": {"randint": [4.5, 8]}}, {"method": "random"}, "axes.r.randint[0]", "expected int"),
    ("sampled in a grid", {"beta": {"uniform": [0.1, 0.5]}}, {}, "axes.beta", "search.method to random or optuna"),
    (
        "optuna and zip",
        {"z": {"zip": {"max_steps": [2, 4], "warmup_steps": [0, 1]}}},
        {"method": "optuna"},
        "axes.z",
        "not optuna",
    ),
    ("zip lengths", {"z": {"zip": {"max_steps": [2, 4], "warmup_steps": [0]}}}, {}, "axes.z.zip", "equal length"),
    ("unknown method", {"beta": [0.1]}, {"method": "bayes"}, "search.method", "valid: grid, random, optuna"),
    (
        "swept twice",
        {"beta": [0.1], "z": {"zip": {"beta": [0.2], "max_steps": [3]}}},
        {},
        "axes.z.zip.beta",
        "swept twice",
    ),
    (
        "unknown sampler",
        {"beta": {"normal": [0, 1]}},
        {"method": "random"},
        "axes.beta",
        "must be a list of values or one of",
    ),
]


@pytest.mark.parametrize("what,axes,search,field,words", BAD_AXES, ids=[c[0] for c in BAD_AXES])
def test_bad_search_spaces(what, axes, search, field, words):
    spec = small_spec("bad_axes", axes=axes, search=search)
    del spec["train"]["learning_rate"], spec["train"]["max_steps"]
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    assert err.value.field == field and words in str(err.value), str(err.value)


def test_plan_shows_the_rungs_of_a_halving_sweep(tmp_path, capsys):
    spec = small_spec(
        "halving_plan",
        axes={"beta": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]},
        scheduler={"type": "halving", "grace_period": 2, "reduction_factor": 4},
    )
    assert main(["plan", str(write_spec(tmp_path / "h.yaml", spec))]) == 0
    out = capsys.readouterr().out
    assert "16 trials" in out
    assert (
        "scheduler: halving (synchronous successive halving): at 2 eval(s) the best 4 go on; at 8 eval(s) the best 1 go on"
        in out
    )
    # As Ray Tune's bracket rounds: 10 trials, factor 3 -> 4 go on, then 2; one trial: no rung.
    three = parse_spec(small_spec("h3", scheduler={"type": "halving", "reduction_factor": 3}))
    assert three.scheduler.halving_rungs(10) == [(1, 4), (3, 2)] and three.scheduler.halving_rungs(1) == []


def test_a_model_that_cannot_be_loaded_ends_run_with_one_line_before_ray_starts(tmp_path):
    (tmp_path / "not_a_model").mkdir()
    (tmp_path / "not_a_model" / "notes.txt").write_text("weights elsewhere")
    cases = [
        ("./no/such/model", "model: './no/such/model': no such model directory, and not a hub id"),
        (
            "nobody-here/no-such-model-7b",
            "model: nobody-here/no-such-model-7b is not in the local Hugging Face cache and HF_HUB_OFFLINE is set",
        ),
        (str(tmp_path / "not_a_model"), "is a directory without config.json: not a model"),
    ]
    for model, message in cases:
        spec = small_spec("bad_model", model=model, dataset={"path": "builtin:prefs"})
        path = str(write_spec(tmp_path / "bad_model.yaml", spec))
        proc = run_cli("run", path, cwd=tmp_path, timeout=120, python_flags=("-X", "importtime"))
        assert proc.returncode == 2, (model, proc.stdout[-2000:], proc.stderr[-2000:])
        said = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
        assert len(said) == 1 and message in said[0], said
        # before Ray starts: not even imported, and nothing written
        assert not {m for m in imported_modules(proc.stderr) if m == "ray" or m.startswith("ray.")}
        assert not (tmp_path / "results").exists()
    # plan validates hub specs offline: a hub id it cannot see is a warning there, not an error
    spec = small_spec("hub_model", model="nobody-here/no-such-model-7b", dataset={"path": "builtin:prefs"})
    proc = run_cli("plan", str(write_spec(tmp_path / "hub_model.yaml", spec)), cwd=tmp_path)
    assert proc.returncode == 0 and "warning: model: nobody-here/no-such-model-7b is not in the local" in proc.stderr


def test_warm_workers_are_as_many_as_trials_can_run_at_once_and_no_more(monkeypatch):
    """One per trial that can run at once: the CPUs over `resources.cpu`, at most
    `max_concurrent_trials` and the sweep's trials (an unused warm worker imports the stack
    for nothing)."""
    from sweep.runtime import cluster

    monkeypatch.setattr(cluster.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(cluster, "may_have_cuda", lambda: False)
    four = small_spec("w", axes={"beta": [0.1, 0.2, 0.3, 0.4]}, resources={"cpu": 1})
    assert cluster.trials_at_once(parse_spec(four)) == 4  # 8 CPUs, 4 trials
    assert cluster.trials_at_once(parse_spec({**four, "axes": {"beta": [0.1]}})) == 1
    assert cluster.trials_at_once(parse_spec({**four, "resources": {"cpu": 4}})) == 2
    assert cluster.trials_at_once(parse_spec({**four, "max_concurrent_trials": 3})) == 3


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    from sweep.files import write_atomic

    path = tmp_path / "ended.json"
    write_atomic(path, "old")
    with pytest.raises(UnicodeEncodeError):  # fails mid-write, as a full disk would
        write_atomic(path, "new \ud800")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["ended.json"]
    write_atomic(path, "new")
    assert path.read_text() == "new"


def test_a_randint_axis_draws_both_of_its_ends():
    """`r: {randint: [4, 5]}` includes 5: Ray Tune's upper bound is exclusive, the spec's is not."""
    from sweep.driver.orchestrate import param_space

    spec = small_spec("ends", axes={"r": {"randint": [4, 5]}}, search={"method": "random", "num_samples": 2})
    drawn = param_space(parse_spec(spec))["r"].sample(size=200)
    assert set(drawn) == {4, 5}


def test_null_in_an_override_clears_the_field_and_overrides_change_the_fingerprint(tmp_path):
    """`--set judge=null` takes the section out (the default applies); a sweep run with other
    overrides is another sweep (resuming it needs the same ones: the fingerprint says so)."""
    spec = small_spec("cleared", judge={"prompts": 8, "scorers": ["builtin:verifiable"]})
    path = write_spec(tmp_path / "c.yaml", spec)
    assert load_spec(path).judge.prompts == 8
    assert load_spec(path, ["judge=null"]).judge.prompts == 0  # the default: no judge
    assert load_spec(path, ["train.max_length=null"]).train.get("max_length") is None
    plain, shorter = load_spec(path).fingerprint(), load_spec(path, ["train.max_steps=5"]).fingerprint()
    assert shorter != plain and load_spec(path, ["train.max_steps=5"]).fingerprint() == shorter
    assert load_spec(path, ["train.max_steps=12"]).fingerprint() == plain  # the value, not the act of overriding


def test_loss_type_cpo_is_cpos_sigmoid_loss_with_behaviour_cloning_and_simpo_is_without(tmp_path):
    """`cpo` trains CPOTrainer's sigmoid loss with its `cpo_alpha` BC term; `simpo` is CPO's
    simpo loss with `cpo_alpha: 0` unless the spec sets it."""
    from sweep.trial.configs import build_configs

    spec = parse_spec(small_spec("cpo", axes={"loss_type": ["cpo", "simpo"]}))
    family, config, _, _ = build_configs(spec, {"loss_type": "cpo"}, tmp_path, cuda=False)
    assert (family.name, type(config).__name__, config.loss_type, config.cpo_alpha) == (
        "cpo",
        "CPOConfig",
        "sigmoid",
        1.0,
    )
    family, config, _, _ = build_configs(spec, {"loss_type": "simpo"}, tmp_path, cuda=False)
    assert (family.name, config.loss_type, config.cpo_alpha) == ("cpo", "simpo", 0.0)
