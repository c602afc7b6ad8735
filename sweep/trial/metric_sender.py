"""A trial's metrics, sent to MLflow off the training thread: buffered, merged into batches,
and retried through a busy or briefly absent tracking server.

MLflow's asynchronous logging (`log_batch(synchronous=False)`) buffers and merges off-thread
as well, but drops a batch whose call fails once its HTTP client has given up: a server that
answers "QueuePool limit ... reached" (a 400), or one down for longer than the client's
retries, costs points. Here a batch is retried, with backoff, until `give_up_s` have passed
since its oldest point was logged; only then is it dropped, counted, and said so.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from ..record.tracking import client, metric_points

# MLflow's limit of metrics per log_batch call.
MAX_PER_BATCH = 1000
# Refusals a retry cannot mend: the run is gone or ended, or a value is malformed.
PERMANENT = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "PERMISSION_DENIED", "UNAUTHENTICATED"})


def is_permanent(error: BaseException) -> bool:
    """True for MLflow errors that resending the same batch cannot fix; connection errors,
    429/5xx and an overloaded store's time-outs (MLflow's BAD_REQUEST) are transient."""
    return getattr(error, "error_code", None) in PERMANENT


class MetricSender:
    """`log(metrics, step)` returns at once; a background thread sends every `interval_s`,
    as few calls as the pending points fit in. A point's timestamp is fixed when it is logged,
    so resending a batch whose answer was lost adds nothing twice (MLflow's store skips a
    metric it already has)."""

    def __init__(self, uri: str, run_id: str, give_up_s: float = 600.0, interval_s: float = 1.0):
        self.client, self.run_id = client(uri), run_id
        self.give_up_s, self.interval_s = give_up_s, interval_s
        self.sent = self.dropped = self.retries = 0
        self.last_error: str | None = None
        self._pending: list[tuple[float, Any]] = []  # (time logged, mlflow Metric), oldest first
        self._cond = threading.Condition()
        self._closing = self._abandoned = self._flushing = False
        self._thread = threading.Thread(target=self._run, name=f"sweep-metrics-{run_id[:8]}", daemon=True)
        self._thread.start()

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Queue the finite numbers of `metrics` at `step` (strings, bools and NaN/inf are left out)."""
        now = time.time()
        batch = [(now, m) for m in metric_points(metrics, step, int(now * 1000))]
        with self._cond:
            if self._closing:
                raise RuntimeError("MetricSender is closed")
            self._pending.extend(batch)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every point logged so far is stored or given up on (at most `timeout`
        seconds, default `give_up_s`): before a report the scheduler may stop the trial at, as
        a stopped trial's process ends before this thread could send what it holds."""
        deadline = time.time() + (self.give_up_s if timeout is None else timeout)
        with self._cond:
            self._flushing = True
            self._cond.notify_all()
            while self._pending and time.time() < deadline:
                self._cond.wait(min(0.1, max(0.0, deadline - time.time())))
            self._flushing = False

    def close(self, timeout: float | None = None) -> int:
        """Send what is pending, waiting at most `timeout` seconds (default: `give_up_s`), then
        stop. Returns the points that never reached the store (dropped or still unsent)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(self.give_up_s if timeout is None else timeout)
        with self._cond:
            self._abandoned = True
            self.dropped += len(self._pending)  # still unsent after the wait: never will be
            self._pending.clear()
        return self.dropped

    def summary(self) -> str:
        """One line saying what was lost and why ('' when nothing was)."""
        if not self.dropped:
            return ""
        return (
            f"{self.dropped} metric point(s) could not be sent to the tracking server within "
            f"{self.give_up_s:g} s and were dropped (last error: {self.last_error})"
        )

    def _run(self) -> None:
        while True:
            with self._cond:
                if not (self._closing or (self._flushing and self._pending)):
                    self._cond.wait(self.interval_s)
                chunk = self._pending[:MAX_PER_BATCH]
                if not chunk and self._closing:
                    return
            if chunk:
                self._send(chunk)

    def _send(self, chunk: list[tuple[float, Any]]) -> None:
        """Send `chunk` (the head of the pending list) until it is stored, refused for good,
        or older than `give_up_s`; then take it off the list."""
        delay = 0.5
        while not self._abandoned:
            try:
                self.client.log_batch(self.run_id, metrics=[m for _, m in chunk])
                self.sent += len(chunk)
                break
            except Exception as e:  # every failure is either retried or counted
                self.last_error = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                if is_permanent(e) or time.time() - chunk[0][0] + delay > self.give_up_s:
                    self.dropped += len(chunk)
                    break
                self.retries += 1
                time.sleep(delay * random.uniform(0.5, 1.5))  # jitter: trials refused together retry apart
                delay = min(delay * 2, 15.0)
        with self._cond:
            del self._pending[: len(chunk)]
            self._cond.notify_all()  # a flush() may be waiting
