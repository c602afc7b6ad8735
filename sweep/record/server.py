"""The MLflow UI and tracking server, started on a sweep's store (127.0.0.1 unless told otherwise)."""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from .. import secrets
from ..errors import SpecError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# MLflow's log_batch holds two database connections at once (the run's session, then one to
# write the metrics), and a server worker serves up to 40 requests at a time (its thread pool).
# With SQLAlchemy's default pool of 5 + 10, 15 concurrent writers each hold one connection and
# wait for a second that never comes: every write stalls until the 30 s pool time-out and fails.
POOL = {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "10", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "70"}


def default_workers(store_uri: str) -> int:
    """Server processes: one on sqlite (one writer at a time: more only queue on its lock),
    four on a database server, which takes concurrent writers."""
    return 1 if store_uri.startswith("sqlite:") else 4


def shown(store_uri: str) -> str:
    """`store_uri` without its password, to print."""
    return secrets.mask_text(store_uri)


LOOPBACK = ("127.0.0.1", "localhost", "::1")
USERNAME, PASSWORD = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"  # MLflow's own: clients send them


def credentials(host: str, trust_network: bool) -> tuple[str, str] | None:
    """The admin credentials a server on `host` requires, from the environment (trials and
    readers send the same variables); None on loopback or on a network the user trusts. A
    server others can reach without either is refused: anyone who reaches the port could
    read, change and delete every run, and upload adapters that `evaluate` and `promote` load."""
    if host in LOOPBACK:
        return None
    user, password = os.environ.get(USERNAME), os.environ.get(PASSWORD)
    if user and password:
        return user, password
    if trust_network:
        print(f"warning: serving on {host} without authentication (--trust-network)", file=sys.stderr)
        return None
    raise SpecError(
        "--host",
        f"a server on {host} can be reached by others and needs credentials: set {USERNAME} and {PASSWORD} "
        "(trials and readers send the same), or pass --trust-network on a network you trust",
    )


def _auth_config(folder: Path, user: str) -> Path:
    """MLflow's basic-auth configuration: nobody but the admin user may do anything; the
    admin's password comes from the environment, never from a file or the command line."""
    config = folder / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{folder / 'basic_auth.db'}\nadmin_username = {user}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return config


def start_mlflow_server(
    store_uri: str,
    host: str,
    port: int,
    artifacts_dir: Path,
    workers: int | None = None,
    auth: tuple[str, str] | None = None,
    echo: bool = True,
) -> subprocess.Popen:
    """`mlflow server` on `store_uri`, proxying artifacts to `artifacts_dir` (so remote trials can
    upload through it), with MLflow's basic authentication where `auth` names the admin (its
    users kept beside the artifacts). Returns once it answers /health. `echo`: its warnings
    pass on to our stderr (else only its last lines, if it exits)."""
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job runner to start: the UI is up sooner
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
        **POOL,
    }
    app = []
    if auth is not None:
        artifacts_dir.parent.mkdir(parents=True, exist_ok=True)
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(_auth_config(artifacts_dir.parent, auth[0]))
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = auth[1]
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", os.urandom(24).hex())  # CSRF tokens, this server's
        app = ["--app-name", "basic-auth"]
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts_dir),
        "--workers",
        str(workers or default_workers(store_uri)),
        *app,
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tail = _drain(proc.stderr, echo)
    proc.last_lines = None if echo else tail  # said by serve_until_interrupted if it dies
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            time.sleep(0.2)  # the drain thread's last lines
            raise RuntimeError(f"mlflow server on {shown(store_uri)} exited: {''.join(tail)[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"mlflow server did not answer on {url} within 90 s")


def _drain(stream, echo: bool) -> collections.deque:
    """Read the server's stderr for as long as it runs: a full pipe would block its next log
    line, and every request with it. Its last lines are kept for an error message; with `echo`,
    its warnings and errors (not its INFO chatter) pass on to ours."""
    tail: collections.deque = collections.deque(maxlen=40)

    def pump():
        for line in stream:
            tail.append(line)
            if echo and " INFO" not in line[:32]:
                sys.stderr.write(line)

    threading.Thread(target=pump, daemon=True).start()
    return tail


def serve_until_interrupted(proc: subprocess.Popen) -> int:
    """Block while the server runs; Ctrl-C (or SIGTERM) stops it cleanly."""
    import signal

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        proc.wait()
        if proc.returncode and getattr(proc, "last_lines", None):
            time.sleep(0.2)  # the drain thread's last lines
            sys.stderr.write("".join(proc.last_lines))
        return proc.returncode or 0
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        print("server stopped", file=sys.stderr)
        return 0
