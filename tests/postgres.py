"""A PostgreSQL server for the tests from the binaries the `pgserver` wheel ships (a test
dependency): no system package, no root. It listens on a Unix socket in a folder of its own
only, and is stopped and removed by whoever started it."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Each `sweep server` worker may hold 80 connections (sweep/record/server.py's POOL).
MAX_CONNECTIONS = 200


def binaries() -> Path:
    """PostgreSQL's bin folder inside the installed `pgserver` package (not imported: its
    import registers exit handlers and lock files this helper does not need)."""
    found = importlib.util.find_spec("pgserver")
    if found is None or not found.submodule_search_locations:
        raise RuntimeError("the PostgreSQL tests need the `pgserver` wheel: pip install -e '.[test]'")
    return Path(found.submodule_search_locations[0]) / "pginstall" / "bin"


@contextlib.contextmanager
def local_postgres(timeout_s: int = 60) -> Iterator[str]:
    """Yield the URI of a fresh, empty PostgreSQL database; stop the server and delete its
    files on exit. PostgreSQL refuses to run as root, so root runs it as `nobody`."""
    # A short path: a Unix socket's path may not exceed ~107 bytes.
    home = Path(tempfile.mkdtemp(prefix="sweep-pg-", dir="/tmp"))
    data, log = home / "data", home / "server.log"
    as_user: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        as_user = ["runuser", "-u", "nobody", "--"]
    bin_dir = binaries()

    def run(*cmd: str) -> None:
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}{tail}")

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=utf8")
        options = f"-h '' -k {home} -c max_connections={MAX_CONNECTIONS}"  # no TCP: the socket only
        run(
            str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", str(timeout_s), "start"
        )
        try:
            yield f"postgresql://postgres@/postgres?host={home}"
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", str(timeout_s), "stop")
    finally:
        shutil.rmtree(home, ignore_errors=True)
