"""A failure told in one line: a trial's error as Ray reports it (`failure_cause`, `error_line`),
and a full disk under any error (`disk_full`). Imports no Ray: the CLI's last-resort handler uses it."""

from __future__ import annotations

import errno
import re
from pathlib import Path


def error_line(trial) -> str:
    """Why the trial failed, in one short line (Ray keeps the whole error in a file)."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).exists():
        return failure_cause(Path(path).read_text(errors="replace"))
    return "see the trial's MLflow run"


def failure_cause(error: str) -> str:
    """One short line for Ray's text of a trial's error: a worker process or a node that died
    is named as such (Ray's multi-line advice stays in the error file); otherwise the error's
    last line, as a Python exception ends."""
    if "its node has died" in error or "NodeDiedError" in error:
        node = re.search(r"(?:node[ _]id|Node ID|NodeID)[:= ]+(\w+)", error, re.IGNORECASE)
        return f"node {node.group(1)[:12] if node else '?'} left the cluster"
    if "is temporarily unavailable" in error or "ActorUnavailableError" in error:
        # The connection to the trial's worker closed before Ray knew why: with a node that left,
        # Ray reports this, not the node's death (its health checks take longer to say so).
        return "lost contact with the trial's worker: its process or its node went away"
    if "worker process has died" in error or "ActorDiedError" in error:
        pid = re.search(r"\bpid: (\d+)", error)
        return f"worker process died{f' (pid {pid.group(1)})' if pid else ''}: killed (the OOM killer?) or crashed"
    lines = [ln for ln in error.splitlines() if ln.strip()]
    if not lines:
        return "unknown error"
    # sweep's own errors are phrased for users: without their class path
    return re.sub(r"^sweep(\.\w+)+: ", "", lines[-1].strip())[:300]


def disk_full(error: BaseException) -> str:
    """'no space left on device writing PATH' (or the store's 'database or disk is full') where
    `error`, or an error it was raised from, says the disk is full; '' otherwise."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return f"no space left on device{f' writing {error.filename}' if error.filename else ''}"
        if "database or disk is full" in str(error):
            return "the tracking store's disk is full (database or disk is full)"
        error = error.__cause__ or error.__context__
    return ""
