"""The docs hold: figures rendered from the benchmark JSON, the spec reference from the schema, CI
runs the README's quick start, every claim names tests that exist and each has a revert."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tests.conftest import REPO


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_measured_figure_in_the_docs_is_the_rendering_of_its_benchmark_json():
    """benchmarks/render.py renders each `<!-- NAME.json: begin/end -->` region of the README and
    docs/benchmarks.md from benchmarks/NAME.json: one figure edited by hand, or a JSON re-measured
    without re-rendering, fails here."""
    render = _benchmark("render")
    assert render.documents() == ["README.md", "docs/benchmarks.md"]
    for doc in render.documents():
        assert render.rendered(doc) == (REPO / doc).read_text(), f"{doc}: run python benchmarks/render.py"
    # the regions hold their tables, dated and with their machine, not empty sections
    speedup = json.loads((REPO / "benchmarks" / "sweep_speedup.json").read_text())
    readme = (REPO / "README.md").read_text()
    assert f"| {speedup['machine']} CPU, {speedup['date']}, embedded default" in readme
    assert f"| {speedup['detail']['sweep_wall_s']:.0f} s: {speedup['detail']['speedup']:.2f}×" in readme
    default = json.loads((REPO / "benchmarks" / "default_sweep.json").read_text())
    assert default["printed_report"][0] in readme and f"On {default['machine']} ({default['date']};" in readme
    scale = json.loads((REPO / "benchmarks" / "data_scale.json").read_text())
    assert f"| {max(map(int, scale['sizes'])) * 9 // 10:,} |" in (REPO / "docs" / "benchmarks.md").read_text()


def test_a_region_edited_by_hand_is_told_apart_from_its_rendering(tmp_path, monkeypatch):
    """`render.py --check` exits 1 naming the document whose figure was typed over."""
    render = _benchmark("render")
    for doc in render.documents():
        (tmp_path / doc).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / doc).write_text((REPO / doc).read_text())
    (tmp_path / "benchmarks").symlink_to(REPO / "benchmarks")
    monkeypatch.setattr(render, "REPO", tmp_path)
    assert [d for d in render.documents() if render.rendered(d) != (tmp_path / d).read_text()] == []
    readme = tmp_path / "README.md"
    speedup = json.loads((REPO / "benchmarks" / "sweep_speedup.json").read_text())
    typed = f"{speedup['detail']['naive_wall_s']:.0f} s"
    assert typed in readme.read_text()
    readme.write_text(readme.read_text().replace(typed, f"{speedup['detail']['naive_wall_s'] + 1:.0f} s", 1))
    monkeypatch.setattr(sys, "argv", ["render.py", "--check"])
    with pytest.raises(SystemExit) as stop:
        render.main()
    assert stop.value.code == 1


def test_the_spec_field_reference_is_the_rendering_of_the_schema():
    """docs/spec.md's tables are `python -m sweep schema --markdown`: a field added to the
    schema, or a help string changed, shows up there or this fails."""
    from sweep.spec.export import rendered_spec_doc

    doc = (REPO / "docs" / "spec.md").read_text()
    assert rendered_spec_doc(doc) == doc, (
        "re-render: python -c 'from sweep.spec.export import write_spec_doc; write_spec_doc()'"
    )
    assert "| `reduction_factor` | number (> 1) | 2 |" in doc  # the tables are there, not an empty section


def test_ci_runs_the_readmes_quick_start_as_written():
    """`.ci/run` takes its commands from the README's quick-start block, so CI proves what a
    newcomer who copies them gets: the set-up, the main job, the tests."""
    import subprocess

    printed = subprocess.run(
        ["bash", str(REPO / ".ci" / "run"), "--print"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert printed == block
    lines = [line.split("#")[0].strip() for line in block.splitlines()]
    assert "python -m sweep run search_spaces/beta_grid.yaml" in lines and "python -m pytest" in lines
    assert any(line.startswith("python3 -m venv .venv") and "pip install -e '.[test]'" in line for line in lines)


def test_every_claim_names_tests_that_exist():
    """docs/claims.md maps each claim to its tests, and the README and docs/*.md name tests
    beside what they say: a test renamed or removed leaves a claim unheld, and fails here."""
    import ast
    import re

    defined: dict[str, set[str]] = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text())
        defined[str(path.relative_to(REPO))] = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    everywhere = set().union(*defined.values())
    claims = (REPO / "docs" / "claims.md").read_text()
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", claims)
    assert len(named) > 80
    for path, test in named:
        assert test in defined.get(path, ()), f"docs/claims.md names {path}::{test}, which does not exist"
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for test in re.findall(r"\b(test_\w+)\b(?!\.py)", doc.read_text()):
            assert test in everywhere, f"{doc.name} names {test}, which no test file defines"


def test_every_claims_test_has_a_revert_whose_piece_is_still_in_its_file():
    """scripts/revert_claims.py shows each test of docs/claims.md failing with its feature taken
    out (tests/claim_reverts.py): a test listed without a revert, or a revert whose piece of
    source was since rewritten, fails here instead of silently checking nothing."""
    import re

    from tests.claim_reverts import REVERTS

    named = {
        f"{path}::{test}"
        for path, test in re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", (REPO / "docs" / "claims.md").read_text())
    }
    reverted = {test for revert in REVERTS for test in revert.tests}
    assert sorted(named - reverted) == [], "add a revert to tests/claim_reverts.py"
    for revert in REVERTS:
        text = (REPO / revert.file).read_text()
        assert text.count(revert.old) == 1, f"{revert.name}: its piece of {revert.file} is not there exactly once"
        assert revert.old != revert.new and revert.tests, revert.name
