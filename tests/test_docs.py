"""Figures in the docs are rendered from the benchmark JSON beside the script that measured
them, never typed by hand."""

from __future__ import annotations

import importlib.util
import json

from .conftest import REPO


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_data_scale_table_is_the_rendering_of_its_json():
    data_scale = _benchmark("data_scale")
    results = json.loads((REPO / "benchmarks" / "data_scale.json").read_text())
    doc = (REPO / "docs" / "benchmarks.md").read_text()
    assert data_scale.rendered_doc(results) == doc
    assert f"| {max(map(int, results['sizes'])) * 9 // 10:,} |" in doc  # the table is there, not an empty section


def test_the_spec_field_reference_is_the_rendering_of_the_schema():
    """docs/spec.md's tables are `python -m sweep schema --markdown`: a field added to the
    schema, or a help string changed, shows up there or this fails."""
    from sweep.schema_export import rendered_spec_doc

    doc = (REPO / "docs" / "spec.md").read_text()
    assert rendered_spec_doc(doc) == doc, (
        "re-render: python -c 'from sweep.schema_export import write_spec_doc; write_spec_doc()'"
    )
    assert "| `reduction_factor` | number (> 1) | 2 |" in doc  # the tables are there, not an empty section
