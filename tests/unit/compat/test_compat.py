"""The one door to other libraries' internals: checked against the pinned versions, and with
another version each use turns itself off (or, for `scheduler: halving`, is refused) instead
of failing mid-sweep."""

from __future__ import annotations

import ast
import re

import pytest

from sweep import compat
from sweep.compat import ray_internals
from sweep.spec.load import SpecError, parse_spec
from tests.conftest import REPO, small_spec

PRIVATE = re.compile(r"\._[a-zA-Z]\w*|_private|_system_config")


def test_the_pinned_stack_is_the_one_the_internals_were_written_for():
    assert compat.differing() == {}, "upgraded? check each use in sweep/compat/ against the new version first"


def test_no_private_attribute_of_a_library_outside_the_compat_package():
    """Every `x._name` (x not self, cls or one of sweep's own modules) and every `_keyword=`
    argument in sweep/**/*.py: none outside sweep/compat/."""
    package = REPO / "sweep"
    mine = [p for p in sorted(package.rglob("*.py")) if "compat" not in p.relative_to(package).parts]
    assert len(mine) > 40 and any(p.parent != package for p in mine)  # every sub-package read
    own = {"self", "cls", "os", "atexit"} | {p.stem for p in mine}
    outside = []
    for path in mine:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                base = node.value
                if not (isinstance(base, ast.Name) and base.id in own):
                    outside.append(f"{path.relative_to(package)}:{node.lineno}: .{node.attr}")
            if isinstance(node, ast.keyword) and node.arg and node.arg.startswith("_"):
                outside.append(f"{path.relative_to(package)}:{node.value.lineno}: {node.arg}=")
    assert outside == []
    # ...and the scan does see them where they are
    inside = [p for p in (REPO / "sweep" / "compat").glob("*.py") if PRIVATE.search(p.read_text())]
    assert {p.name for p in inside} >= {"ray_internals.py", "hf_internals.py", "halving.py"}


@pytest.fixture
def ray_upgraded(monkeypatch):
    real = compat.installed
    monkeypatch.setattr(compat, "installed", lambda lib: "2.61.0" if lib == "ray" else real(lib))
    monkeypatch.setattr(compat, "_WARNED", set())


def test_another_ray_refuses_halving_and_turns_the_warm_workers_off(ray_upgraded, capsys):
    with pytest.raises(SpecError) as e:
        parse_spec(small_spec("h", scheduler={"type": "halving"}))
    assert e.value.field == "scheduler.type" and "ray 2.61.0 (written for 2.60.0)" in str(e.value)
    parse_spec(small_spec("a", scheduler={"type": "asha"}))  # the public schedulers are kept

    assert ray_internals.local_init_kwargs() == {} and ray_internals.local_init_kwargs() == {}
    from ray.tune.execution import class_cache

    before = dict(class_cache.DEFAULT_ENV_VARS)
    with ray_internals.tune_actors_without_runtime_env():
        assert class_cache.DEFAULT_ENV_VARS == before  # Tune's own behaviour, untouched
    ray_internals.kill_autoscaler_monitor()  # no Ray here, and no AttributeError either
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "warning: warm workers (the stack preloaded in Ray's prestarted workers) is off: "
        "it relies on internals of ray 2.61.0 (written for 2.60.0)",
        "warning: the fast local Ray shutdown is off: it relies on internals of ray 2.61.0 (written for 2.60.0)",
    ]  # one line per feature, however often it is asked


def test_with_the_pinned_ray_the_internals_are_used(capsys):
    assert "preload_python_modules" in ray_internals.local_init_kwargs()["_system_config"]
    from ray.tune.execution import class_cache

    with ray_internals.tune_actors_without_runtime_env():
        assert class_cache.DEFAULT_ENV_VARS == {}
    assert class_cache.DEFAULT_ENV_VARS  # restored
    assert capsys.readouterr().err == ""
