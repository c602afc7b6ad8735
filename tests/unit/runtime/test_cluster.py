"""Ray for a sweep: an address where no Ray answers is one line, not a wait."""

from __future__ import annotations

from tests.conftest import (
    NO_RAY,
    run_cli,
    small_spec,
    write_spec,
)


def test_an_address_where_no_ray_answers_is_one_line_not_a_wait(tmp_path):
    """`run` told to join a cluster that is not there (Ray's own connect retries without end):
    exit 2 at once, one line naming where the address came from; nothing written."""
    path = write_spec(tmp_path / "s.yaml", small_spec("nowhere"))
    proc = run_cli("run", str(path), cwd=tmp_path, timeout=60)  # the fast tier's $RAY_ADDRESS: NO_RAY
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == (
        f"error: RAY_ADDRESS: no Ray cluster answers at {NO_RAY} (connection refused): start one with "
        "`ray start --head`, or leave --address and $RAY_ADDRESS unset for a local Ray"
    )
    proc = run_cli("run", str(path), "--address", "10.0.0.1", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: --address: '10.0.0.1' is not HOST:PORT")
    assert not (tmp_path / "results").exists()
