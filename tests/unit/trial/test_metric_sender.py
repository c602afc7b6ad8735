"""A trial's metric sender: it gives up after its bound and counts what it dropped."""

from __future__ import annotations

import socket
import time

from sweep.trial.metric_sender import MetricSender


def test_a_sender_gives_up_after_its_bound_and_counts_what_it_dropped(monkeypatch):
    """Nothing listens at the tracking URI: close() returns within the bound, everything counted."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    sender = MetricSender(f"http://127.0.0.1:{port}", "0" * 32, give_up_s=2.0, interval_s=0.1)
    for step in range(5):
        sender.log({"loss": 1.0 / (step + 1), "note": "text", "nan": float("nan"), "flag": True}, step)
    started = time.time()
    assert sender.close(timeout=10) == 5  # one finite number per step; the rest was never a point
    assert time.time() - started < 10
    assert sender.retries >= 1 and sender.sent == 0
    assert sender.summary().startswith("5 metric point(s) could not be sent to the tracking server within 2 s")
