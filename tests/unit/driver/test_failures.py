"""A failure told in one line: a store that is away, a worker or a node that died, a full disk."""

from __future__ import annotations

import pickle

from sweep.record import tracking


def test_store_faults_and_dead_workers_are_told_in_one_short_line():
    from sweep.driver.failures import failure_cause

    refused = ConnectionError(
        "API request to endpoint /api/2.0/mlflow/runs/update failed with exception HTTPConnectionPool("
        "host='127.0.0.1', port=5000): Max retries exceeded (Caused by NewConnectionError(... [Errno 111] "
        "Connection refused'))\nmore lines"
    )
    error = tracking.StoreUnreachable.of("http://127.0.0.1:5000", "the trial's end was not recorded", refused)
    assert (
        str(error)
        == "tracking server unreachable at http://127.0.0.1:5000: the trial's end was not recorded (Connection refused)"
    )
    assert str(pickle.loads(pickle.dumps(error))) == str(error)  # Ray sends a trial's error to the driver pickled
    full = tracking.StoreUnreachable.of(
        "sqlite:///r/mlflow.db", "x", OSError("(sqlite3.OperationalError) database or disk is full")
    )
    assert str(full) == "tracking store failed: sqlite:///r/mlflow.db: x (disk is full)"
    ray_text = (
        "Failure # 1\nTraceback (most recent call last):\n  File ...\nsweep.record.tracking.StoreUnreachable: "
        + str(error)
    )
    assert failure_cause(ray_text) == str(error)  # sweep's own error, without its class path
    assert failure_cause("Traceback ...\n  File ...\nValueError: bad value\n") == "ValueError: bad value"
    died = "ray.exceptions.ActorDiedError: The actor died ... The actor is dead because its worker process has died. pid: 4242 ..."
    assert failure_cause(died) == "worker process died (pid 4242): killed (the OOM killer?) or crashed"
    lost = "ActorUnavailableError: The actor 4afb is unavailable: The actor is temporarily unavailable: Socket closed"
    assert failure_cause(lost) == "lost contact with the trial's worker: its process or its node went away"


def test_a_full_disk_is_named_whichever_write_hit_it():
    import errno

    from sweep.driver.failures import disk_full

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "results/x/summary.csv")
        except OSError as e:
            raise RuntimeError("Tune could not save its state") from e
    except RuntimeError as e:
        assert disk_full(e) == "no space left on device writing results/x/summary.csv"
    sqlite_full = RuntimeError("(sqlite3.OperationalError) database or disk is full [SQL: INSERT ...]")
    assert disk_full(sqlite_full) == "the tracking store's disk is full (database or disk is full)"
    assert disk_full(OSError(errno.EACCES, "Permission denied")) == ""
