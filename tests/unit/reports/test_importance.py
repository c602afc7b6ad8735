"""Which axis mattered (Optuna's fANOVA), and what it says where it cannot tell."""

from __future__ import annotations

import re

import pandas as pd
import pytest


@pytest.mark.parametrize("last", [0.5, 0.5 + 1e-12], ids=["equal", "equal but for rounding"])
def test_what_mattered_says_the_axes_cannot_be_told_apart_instead_of_crashing(last):
    """fANOVA raises on metrics with no variance to share out (exactly equal, or equal but for
    float noise: "zero total variance in all trees"); the report says so in a line."""
    from sweep.reports.importance import axis_importance, describe

    df = pd.DataFrame(
        {"status": ["FINISHED"] * 4, "beta": [0.1, 0.1, 0.5, 0.5], "r": [4, 8, 4, 8], "m": [0.5, 0.5, 0.5, last]}
    )
    found = axis_importance(df, ["beta", "r"], "m")
    assert found.table.empty
    assert re.search(r"no axis made a difference|the axes cannot be told apart", describe(found)), found.note
