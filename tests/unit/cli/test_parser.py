"""The command line's arguments: a bad one is one line naming it, exit 2, no usage block."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "argv, named",
    [
        (["promote", "seeded", "--out", "x", "--register", "team/best"], "--register"),
        (["promote", "seeded", "--out", "x", "--register", "v1@best"], "--register"),
        (["promote", "seeded"], "--out"),
        (["report", "seeded", "--top", "three"], "--top"),
        (["report", "seeded", "--format", "xml"], "--format"),
    ],
)
def test_bad_arguments_are_one_line_naming_the_argument(argv, named, capsys):
    from sweep.cli.parser import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and named in err
    assert len(err.strip().splitlines()) == 1, err
