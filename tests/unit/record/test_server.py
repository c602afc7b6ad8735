"""`sweep ui` and `sweep server`: off loopback they require credentials."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("command", ["server", "ui"])
def test_a_server_others_can_reach_needs_credentials(command, tmp_path, monkeypatch, capsys):
    """Off loopback, without MLflow's credential variables or --trust-network: one line, exit 2,
    nothing started (anyone reaching the port could change every run)."""
    from sweep.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tmp_path / "results"
    store.mkdir()
    (store / "mlflow.db").touch()  # `ui` needs a store to show

    def started(*args, **kwargs):  # (without the check, the test ends here instead of serving on 0.0.0.0)
        raise AssertionError("a server others can reach was started without credentials")

    monkeypatch.setattr("sweep.record.server.start_mlflow_server", started)
    assert main([command, "--host", "0.0.0.0", "--port", "1", "--results-dir", str(store)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --host: a server on 0.0.0.0 can be reached by others and needs credentials")
