"""What a spec cannot say alone, refused before any trial: the cluster, the trainers, the data."""

from __future__ import annotations

import pytest

from sweep.cli import main
from sweep.spec.load import parse_spec
from tests.conftest import run_cli, small_spec, write_spec


def _rows(n, **extra):
    return "".join(
        __import__("json").dumps({"prompt": f"q{i}", "chosen": "yes", "rejected": "no", **extra}) + "\n"
        for i in range(n)
    )


BAD_DATA = [
    # (case, file name, file bytes or None for missing, extra spec changes, field named, words);
    # the first three are found from the path alone, before Ray starts
    ("missing file", "gone.jsonl", None, {}, "dataset.path", "file not found"),
    ("empty file", "empty.jsonl", b"", {}, "dataset.path", "is empty"),
    ("unsupported type", "data.txt", b"hello", {}, "dataset.path", "unsupported file type"),
    (
        "missing columns",
        "cols.jsonl",
        _rows(20).replace('"chosen"', '"good"').encode(),
        {},
        "dataset.columns",
        "lacks column(s) chosen; it has prompt, good, rejected; map them with dataset.columns",
    ),
    (
        "non-UTF-8",
        "latin1.jsonl",
        _rows(5).encode() + '{"prompt": "café"}\n'.encode("latin-1"),
        {},
        "dataset.path",
        "not UTF-8",
    ),
    (
        "prompts longer than max_length",
        "long.jsonl",
        _rows(20).replace('"q', '"' + "word " * 100 + "q").encode(),
        {"train": {"max_length": 64}},
        "train.max_length",
        "too short",
    ),
]


FOUND_FROM_THE_PATH = ("missing file", "empty file", "unsupported type")


REFUSED_ONCE_RAY_IS_UP = [
    # More CPUs per trial than any node of the (local) cluster has: not a sweep waiting forever.
    ({"resources": {"cpu": 512}}, "resources.cpu: a trial asks for 512 CPU(s) and 0 GPU(s), but no node"),
    # A combination only TRL's config refuses (its __post_init__): not a sweep of FAILED trials.
    ({"train": {"load_best_model_at_end": True}}, "train: --load_best_model_at_end requires the save and eval"),
]


@pytest.mark.parametrize("change,says", REFUSED_ONCE_RAY_IS_UP, ids=["no node holds a trial", "TRL refuses the config"])
def test_what_only_the_cluster_or_the_trainer_can_judge_is_refused_before_any_trial(
    tmp_path, tiny_model_path, change, says
):
    path = write_spec(tmp_path / "s.yaml", small_spec("s", axes={"beta": [0.1, 0.5]}, **change))
    proc = run_cli("run", str(path), cwd=tmp_path, timeout=180)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {says}"), line
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("case,fname,content,change,field,words", BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_bad_data_exits_2_and_writes_nothing(
    tmp_path, monkeypatch, capsys, tiny_model_path, case, fname, content, change, field, words
):
    if content is not None:
        (tmp_path / fname).write_bytes(content)
    spec = small_spec(
        "bad_data", dataset={"path": str(tmp_path / fname), "max_train_rows": None, "max_eval_rows": None}
    )
    for key, value in change.items():
        spec[key] = {**spec[key], **value}
    path = write_spec(tmp_path / "spec.yaml", spec)
    monkeypatch.chdir(tmp_path)
    # A bad path fails before Ray starts; data that must be read loads once the local Ray is
    # up, never while its processes fork (orchestrate.py)
    import ray

    from sweep.driver import preflight
    from sweep.runtime import cluster

    ray_up_at_load, load, started, start = [], preflight.load_preference_data, [], cluster.start
    monkeypatch.setattr(  # the driver's one read of the data
        preflight, "load_preference_data", lambda *a, **k: ray_up_at_load.append(ray.is_initialized()) or load(*a, **k)
    )
    monkeypatch.setattr(cluster, "start", lambda *a, **k: started.append(1) or start(*a, **k))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {field}:") and words in err, err
    assert not (tmp_path / "results").exists()  # no MLflow store, no results
    if case in FOUND_FROM_THE_PATH:
        assert started == [] and ray_up_at_load == []
        assert main(["plan", str(path)]) == 0  # the data may be where the sweep runs: a warning there
        assert f"warning: {field}: " in capsys.readouterr().err
    else:
        assert started and ray_up_at_load == [True]


def test_a_points_configs_built_once_are_not_built_again(tmp_path, monkeypatch):
    """`run` builds every point's configs in a process of its own before any trial; a point
    built before without a problem (same libraries, same sections) is not built again, and a
    refused one is checked every time."""
    from sweep.trial.configs import ConfigCheck

    monkeypatch.setenv("SWEEP_CACHE", str(tmp_path / "cache"))
    good = parse_spec(small_spec("good", axes={"beta": [0.1, 0.5]}))
    first = ConfigCheck(good)
    assert first.process is not None and first.result(print) is None
    assert ConfigCheck(good).process is None  # both points remembered
    wider = ConfigCheck(parse_spec(small_spec("wider", axes={"beta": [0.1, 0.5, 0.9]})))
    assert len(wider.keys) == 1 and wider.result(print) is None  # only the new point is built
    bad = ConfigCheck(parse_spec(small_spec("bad", axes={"beta": [0.1]}, train={"load_best_model_at_end": True})))
    field, problem = bad.result(print)
    assert field == "train" and "--load_best_model_at_end requires" in problem
    assert bad.keys and not set(bad.keys) & set(ConfigCheck._remembered())  # checked again next time
