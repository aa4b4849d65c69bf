"""A team's tracking stack on one machine: PostgreSQL + S3 (moto) + a real ``mlflow server``.

What a team runs for real -- an MLflow tracking server with a PostgreSQL backend store and
an S3 artifact store, and a DVC remote on S3 -- started locally for the tests and for
``make server`` (``python -m ops.team_stack [DIR]``). Every service listens on 127.0.0.1
only, on a free port; every context manager stops its processes and removes its directory
in ``finally``, also when the body raises. Standard library, ``subprocess`` and (lazily)
``boto3`` only, so the same code backs the test fixtures and ``make server``.

Entry points: :func:`team_stack` (all three services and the clients' environment), the
classes :class:`Postgres`, :class:`S3Server` and :class:`MlflowServer` (``pids()``,
``stop_server_only()`` for tests that take one service down while the rest runs), and
:func:`serve_forever`. How a team points the project at its own server and bucket instead
is in the README ("Outgrowing one machine"); no code changes for that.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol

log = logging.getLogger("ops.team_stack")  # also when run as __main__

HOST = "127.0.0.1"
PG_USER = "mlflow"  # the cluster's superuser; trust auth, on 127.0.0.1 only
PG_DB = "mlflow"
ARTIFACTS_BUCKET = "mlflow"
DVC_BUCKET = "dvc"
DVC_REMOTE = "team"

# Dummy credentials and settings that keep every AWS/MLflow/DVC client hermetic: no
# ~/.aws files, no instance-metadata lookups, no proxy for 127.0.0.1, no telemetry.
HERMETIC_ENV: dict[str, str] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # Paths that cannot exist (nothing lives under /dev/null), so botocore reads no config.
    # /dev/null itself breaks dvc-s3: botocore rejects a non-regular AWS_CONFIG_FILE.
    "AWS_CONFIG_FILE": f"{os.devnull}/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": f"{os.devnull}/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": HOST,
    "no_proxy": HOST,
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
}
# What `make server` tells a user's shell to export (the rest of HERMETIC_ENV would
# disable their own AWS config in that shell).
CLIENT_EXPORTS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_EC2_METADATA_DISABLED",
    "MLFLOW_DISABLE_TELEMETRY",
    "DVC_NO_ANALYTICS",
)
# Server-side defaults (overridable through ``env``): MLflow 3.17's server otherwise starts
# a job runner with ~6 huey consumer processes, which doubles its start on 2 cores.
SERVER_ENV: dict[str, str] = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
# What ``mlflow server`` logs when its backend store does not answer (then it retries).
DB_RETRY_MARKER = "SQLAlchemy engine could not be created"
# Variables of the caller's shell that would point children somewhere else.
_STRIP = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGDATA",
)


class ServiceError(RuntimeError):
    """A service did not start; the message names it and carries the tail of its log."""


class _Launchable(Protocol):
    def launch(self) -> None: ...
    def wait_ready(self) -> str: ...
    def stop_server_only(self) -> None: ...


# ----------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (each service retries a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process.

    Args:
        extra: variables added last (they win).

    Returns:
        ``os.environ`` without the redirecting variables, plus :data:`HERMETIC_ENV`.
    """
    env = {k: v for k, v in os.environ.items() if k not in _STRIP}
    env.update(HERMETIC_ENV)
    env.update(extra or {})
    return env


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _prepare_dir(path: Path) -> Path:
    """Create ``path``; refuse a non-empty one, since it is removed when the service stops."""
    path = Path(path).resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(
            f"{path} must be absent or an empty directory (it is deleted on stop); if it is "
            "left from a stack that was killed, stop any postgres still running there "
            "(pg_ctl -D <dir>/postgres/data stop) and remove it"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _launch_with_port_retry(service: _Launchable, attempts: int = 3) -> str:
    """``launch()`` + ``wait_ready()``, on a new free port when the last one was taken."""
    for attempt in range(attempts):
        service.launch()
        try:
            return service.wait_ready()
        except ServiceError as err:
            if attempt == attempts - 1 or "address already in use" not in str(err).lower():
                raise
            log.warning("port clash, retrying: %s", str(err).splitlines()[0])
            service.stop_server_only()
    raise AssertionError("unreachable")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it (from /proc; Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if _pid_alive(pid):
            out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def alive(pids: Sequence[int]) -> list[int]:
    """The pids of ``pids`` that are still running."""
    return [p for p in pids if _pid_alive(p)]


def _http_status(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of ``url`` (any status means the server answers), None when it does not."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except (OSError, urllib.error.URLError):
        return None


def _kill_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group ``proc`` leads, then SIGKILL whatever is left."""
    pids = descendants(proc.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        for pid in pids:  # also anything that left the group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + grace
        while alive(pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not alive(pids):
            return


# ----------------------------------------------------------------------------- PostgreSQL


def pg_bindir() -> Path:
    """Debian's server binaries: ``$PG_BINDIR``, else the newest /usr/lib/postgresql/<v>/bin.

    Raises:
        ServiceError: none found (``apt-get install -y postgresql``; ``make test`` does it).
    """
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    candidates = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "pg_ctl").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise ServiceError(
        "PostgreSQL server binaries not found: apt-get install -y postgresql "
        "(or set PG_BINDIR to the directory holding initdb and pg_ctl)"
    )


def _pg_account() -> tuple[int, int] | None:
    """(uid, gid) to run the server as, or None to run as ourselves.

    PostgreSQL refuses to run as root. As root we drop to ``$PG_RUN_AS``, else the
    ``postgres`` account that Debian's package creates, else ``nobody``.
    """
    if os.geteuid() != 0:
        return None
    import pwd

    for name in (os.environ.get("PG_RUN_AS"), "postgres", "nobody"):
        if not name:
            continue
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid != 0:
            return entry.pw_uid, entry.pw_gid
    raise ServiceError("running as root and no unprivileged account (postgres/nobody) exists")


class Postgres:
    """A throw-away PostgreSQL cluster: ``initdb`` in ``tmp_dir``, 127.0.0.1, a free port.

    As root the cluster belongs to an unprivileged account (see :func:`_pg_account`), and
    ``initdb``/``pg_ctl`` run as that account through ``subprocess``'s ``user=``/``group=``
    (no sudo or su). When that account cannot reach ``tmp_dir`` (pytest's
    ``/tmp/pytest-of-root`` is 0700) or the socket path would be too long, the cluster goes
    in a fresh directory under the system temp dir instead; both are removed on stop.

    Attributes:
        url: ``postgresql+psycopg2://mlflow@127.0.0.1:PORT/mlflow`` for SQLAlchemy/MLflow
            (SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, not installed).
        dsn: ``postgresql://...``, the libpq form for ``psql``.
    """

    def __init__(self, tmp_dir: str | Path, start_timeout: float = 60.0) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.start_timeout = start_timeout
        self.bindir = pg_bindir()
        self.account = _pg_account()
        self.cluster_dir: Path | None = None  # where data/, the socket and the log live
        self._extra_dir: Path | None = None  # the fallback dir outside tmp_dir, if used
        self._owns_dir = False  # only a dir we prepared is ever deleted
        self.port: int | None = None
        self.url = ""
        self.dsn = ""
        self._postmaster: int | None = None

    def _run(
        self, args: list[str], check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the cluster's account."""
        kwargs: dict[str, Any] = {}
        if self.account is not None:
            kwargs = {"user": self.account[0], "group": self.account[1], "extra_groups": []}
        env = child_env({"LC_ALL": "C", "HOME": str(self.cluster_dir or self.tmp_dir)})
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            cwd=self.cluster_dir or "/",
            **kwargs,
        )
        if check and proc.returncode != 0:
            pg_log = _tail(self.cluster_dir / "postgres.log") if self.cluster_dir else ""
            raise ServiceError(
                f"{Path(args[0]).name} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"
                f"\n--- postgres.log\n{pg_log}"
            )
        return proc

    def _usable(self, path: Path) -> bool:
        """Can the server account create files in ``path``, with a short enough socket path?"""
        if len(str(path / ".s.PGSQL.65535")) > 100:  # sun_path holds 107 bytes
            return False
        if self.account is None:
            return os.access(path, os.W_OK | os.X_OK)
        os.chown(path, *self.account)
        probe = ["test", "-w", str(path), "-a", "-x", str(path)]
        return self._run(probe, check=False, timeout=30).returncode == 0

    def _choose_dir(self) -> Path:
        own = _prepare_dir(self.tmp_dir)
        self._owns_dir = True
        if self._usable(own):
            return own
        self._extra_dir = Path(tempfile.mkdtemp(prefix="team-pg-", dir=tempfile.gettempdir()))
        os.chmod(self._extra_dir, 0o700)
        log.info(
            "postgres: %s is out of the server account's reach, using %s", own, self._extra_dir
        )
        if self._usable(self._extra_dir):
            return self._extra_dir
        raise ServiceError(
            f"the PostgreSQL account cannot use {own} nor {self._extra_dir}: "
            "give a directory it can reach (e.g. under /tmp)"
        )

    def start(self) -> str:
        """Initialise and start the cluster and create the ``mlflow`` database.

        Returns:
            :attr:`url`.

        Raises:
            ServiceError: a tool failed (its stderr and the server log are in the message).
        """
        t0 = time.monotonic()
        try:
            self.cluster_dir = self._choose_dir()
            data = self.cluster_dir / "data"
            self._run(
                [str(self.bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust"]
                + ["-E", "UTF8", "--locale=C", "--no-sync"]
            )
            base_conf = (data / "postgresql.conf").read_text()
            last: Exception | None = None
            for _ in range(3):  # a free port can be taken between probe and bind
                self.port = free_port()
                (data / "postgresql.conf").write_text(
                    base_conf + f"\nlisten_addresses = '{HOST}'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.cluster_dir}'\n"
                    # throw-away data: durability off makes MLflow's migrations quick
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "max_connections = 100\n"
                )
                pg_log = self.cluster_dir / "postgres.log"
                proc = self._run(
                    [str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(pg_log), "-w"]
                    + ["-t", str(int(self.start_timeout)), "start"],
                    check=False,
                    timeout=self.start_timeout + 30,
                )
                self._postmaster = self._read_postmaster_pid()
                if proc.returncode == 0:
                    break
                tail = _tail(pg_log)
                last = ServiceError(f"pg_ctl start failed: {proc.stderr.strip()}\n{tail}")
                self._stop_server()
                if "could not bind" not in tail and "already in use" not in tail:
                    raise last
            else:
                raise last or ServiceError("pg_ctl start failed")
            proc = subprocess.run(
                [str(self.bindir / "createdb"), "-h", HOST, "-p", str(self.port)]
                + ["-U", PG_USER, PG_DB],
                capture_output=True,
                text=True,
                timeout=60,
                env=child_env({"PGCONNECT_TIMEOUT": "10"}),
            )
            if proc.returncode != 0:
                raise ServiceError(f"createdb failed: {proc.stderr.strip()}")
            self.dsn = f"postgresql://{PG_USER}@{HOST}:{self.port}/{PG_DB}"
            self.url = f"postgresql+psycopg2://{PG_USER}@{HOST}:{self.port}/{PG_DB}"
            log.info("postgres up on %s:%s in %.1f s", HOST, self.port, time.monotonic() - t0)
            return self.url
        except BaseException:
            self.stop()
            raise

    def _read_postmaster_pid(self) -> int | None:
        try:
            pidfile = self.cluster_dir / "data" / "postmaster.pid"  # type: ignore[operator]
            return int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError, TypeError):
            return self._postmaster

    def pids(self) -> list[int]:
        """The postmaster and its children (empty once stopped)."""
        pm = self._postmaster
        return descendants(pm) if pm else []

    def _stop_server(self) -> None:
        pids = self.pids()
        data = self.cluster_dir / "data" if self.cluster_dir else None
        if data is not None and (data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._run(
                    [str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "immediate"]
                    + ["-w", "-t", "30", "stop"],
                    check=False,
                    timeout=60,
                )
        deadline = time.monotonic() + 10
        while alive(pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in alive(pids):  # pg_ctl failed or hung: make sure nothing is left
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self._postmaster = None  # its pid may be reused by an unrelated process

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m immediate``, then SIGKILL) and remove its dirs."""
        try:
            self._stop_server()
        finally:
            for path in (self.tmp_dir if self._owns_dir else None, self._extra_dir):
                if path is not None:
                    shutil.rmtree(path, ignore_errors=True)
            log.info("postgres stopped")

    def stop_server_only(self) -> None:
        """Stop the server but keep its files (for tests of a database going away)."""
        self._stop_server()

    def __enter__(self) -> Postgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------- S3 (moto)


class _ServerProcess:
    """A server launched as its own process group, logging to a file: ``start`` launches
    it and waits until it answers (retrying on a taken port), ``stop`` kills it and
    removes what it made. Subclasses define ``launch``, ``wait_ready`` and ``_clean_up``.
    """

    label = "server"
    proc: subprocess.Popen | None
    _log: IO[bytes] | None

    def launch(self) -> None:
        raise NotImplementedError

    def wait_ready(self) -> str:
        raise NotImplementedError

    def _clean_up(self) -> None:
        """Remove what the server wrote (its directory, if this object made it)."""

    def start(self) -> str:
        """Launch and wait; returns the server's URL (stops everything on failure)."""
        try:
            return _launch_with_port_retry(self)
        except BaseException:
            self.stop()
            raise

    def pids(self) -> list[int]:
        """The server process and its children."""
        return descendants(self.proc.pid) if self.proc else []

    def stop_server_only(self) -> None:
        """Kill the server but keep its files."""
        if self.proc is not None:
            _kill_group(self.proc)

    def stop(self) -> None:
        """Kill the server and remove what it made."""
        try:
            self.stop_server_only()
        finally:
            if self._log is not None:
                self._log.close()
            self._clean_up()
            log.info("%s stopped", self.label)

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class S3Server(_ServerProcess):
    """``moto.server`` on 127.0.0.1 and a free port, with ``buckets`` created.

    Moto keeps everything in memory; ``tmp_dir`` holds only its log and is removed on stop.
    """

    def __init__(
        self,
        tmp_dir: str | Path,
        buckets: Sequence[str] = (ARTIFACTS_BUCKET, DVC_BUCKET),
        start_timeout: float = 60.0,
        python: str | None = None,
    ) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.buckets = tuple(buckets)
        self.start_timeout = start_timeout
        self.python = python or sys.executable
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.url = ""
        self._log: IO[bytes] | None = None
        self._owns_dir = False  # only a dir we prepared is ever deleted

    def launch(self) -> None:
        """Start the process without waiting (see :meth:`wait_ready`)."""
        if not self._owns_dir:
            _prepare_dir(self.tmp_dir)
            self._owns_dir = True
        if self._log is not None:
            self._log.close()
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self._log = open(self.tmp_dir / "moto.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [self.python, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=self.tmp_dir,
            start_new_session=True,
        )

    def wait_ready(self) -> str:
        """Wait until moto answers, then create the buckets; returns the endpoint URL."""
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        while _http_status(f"{self.url}/moto-api/") is None:
            if self.proc.poll() is not None:
                moto_log = _tail(self.tmp_dir / "moto.log")
                raise ServiceError(f"moto server exited {self.proc.returncode}:\n{moto_log}")
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"moto server not ready after {self.start_timeout:.0f} s:\n"
                    f"{_tail(self.tmp_dir / 'moto.log')}"
                )
            time.sleep(0.2)
        client = s3_client(self.url)
        for bucket in self.buckets:
            client.create_bucket(Bucket=bucket)
        log.info("S3 (moto) up on %s with buckets %s", self.url, ", ".join(self.buckets))
        return self.url

    label = "S3 (moto)"

    def _clean_up(self) -> None:
        if self._owns_dir:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)


def s3_client(endpoint_url: str) -> Any:
    """A boto3 S3 client for ``endpoint_url`` with the dummy credentials and no retries."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session(
        aws_access_key_id=HERMETIC_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=HERMETIC_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=HERMETIC_ENV["AWS_DEFAULT_REGION"],
    ).client(
        "s3",
        endpoint_url=endpoint_url,
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 1},
            proxies={},
        ),
    )


# ----------------------------------------------------------------------------- MLflow


class MlflowServer(_ServerProcess):
    """``mlflow server`` on 127.0.0.1 and a free port, proxying artifacts to S3.

    Args:
        backend_uri: the backend store (``postgresql+psycopg2://...``).
        artifacts_destination: where the server puts artifacts (``s3://bucket/prefix``).
        env: what the server needs to reach the artifact store (``MLFLOW_S3_ENDPOINT_URL``
            and AWS credentials for moto).
        log_dir: where ``mlflow-server.log`` goes; default a temp dir removed on stop.
        workers: uvicorn workers.
        start_timeout: seconds to wait for ``/health``.
        fail_fast_on_db: fail a start against an unreachable database at the server's first
            retry warning, naming the driver's error, instead of after its ~100 s of retries.
        python: the interpreter (default: this one).
    """

    def __init__(
        self,
        backend_uri: str,
        artifacts_destination: str,
        env: Mapping[str, str] | None = None,
        *,
        log_dir: str | Path | None = None,
        workers: int = 1,
        start_timeout: float = 180.0,
        fail_fast_on_db: bool = True,
        python: str | None = None,
    ) -> None:
        self.backend_uri = backend_uri
        self.artifacts_destination = artifacts_destination
        self.env = dict(env or {})
        self.workers = workers
        self.start_timeout = start_timeout
        self.fail_fast_on_db = fail_fast_on_db
        self.python = python or sys.executable
        self._own_log_dir = log_dir is None
        self.log_dir: Path | None = Path(log_dir) if log_dir else None
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.url = ""
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """The server's combined stdout/stderr."""
        assert self.log_dir is not None
        return self.log_dir / "mlflow-server.log"

    def launch(self) -> None:
        """Start the process without waiting (see :meth:`wait_ready`)."""
        if self._own_log_dir and self.log_dir is None:
            self.log_dir = Path(tempfile.mkdtemp(prefix="team-mlflow-"))
        assert self.log_dir is not None
        if self._log is not None:
            self._log.close()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [self.python, "-m", "mlflow", "server", "--backend-store-uri", self.backend_uri]
            + ["--artifacts-destination", self.artifacts_destination]
            + ["--host", HOST, "--port", str(self.port), "--workers", str(self.workers)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=child_env({**SERVER_ENV, **self.env}),
            cwd=self.log_dir,
            start_new_session=True,
        )

    def _db_unreachable(self) -> str | None:
        """The driver's error once the server has started retrying its backend store."""
        server_log = _tail(self.log_path, 20000)
        if DB_RETRY_MARKER not in server_log:
            return None
        after = server_log.split(DB_RETRY_MARKER, 1)[1]
        lines = [ln for ln in after.splitlines() if "Error" in ln] or after.splitlines()[:3]
        return lines[0].strip() if lines else DB_RETRY_MARKER

    def wait_ready(self) -> str:
        """Wait for ``/health``; returns the tracking URI.

        Raises:
            ServiceError: the server exited, cannot reach its database, or timed out.
        """
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        while _http_status(f"{self.url}/health") != 200:
            if self.proc.poll() is not None:
                raise ServiceError(
                    f"mlflow server exited {self.proc.returncode}:\n{_tail(self.log_path)}"
                )
            if self.fail_fast_on_db and (reason := self._db_unreachable()):
                raise ServiceError(
                    f"mlflow server cannot reach its backend store {self.backend_uri}: {reason}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"mlflow server not healthy after {self.start_timeout:.0f} s:"
                    f"\n{_tail(self.log_path)}"
                )
            time.sleep(0.3)
        log.info("mlflow server up on %s (backend %s)", self.url, self.backend_uri)
        return self.url

    label = "mlflow server"

    def _clean_up(self) -> None:
        if self._own_log_dir and self.log_dir is not None:
            shutil.rmtree(self.log_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- the stack


@dataclasses.dataclass
class TeamStack:
    """What a client of the running stack needs (``env``), and handles for tests."""

    tmp_dir: Path
    tracking_uri: str
    s3_endpoint: str
    backend_uri: str
    artifacts_destination: str  # s3://<ARTIFACTS_BUCKET>/mlartifacts
    dvc_remote_url: str  # s3://<DVC_BUCKET>/dvc
    env: dict[str, str]  # MLFLOW_TRACKING_URI, MLFLOW_S3_ENDPOINT_URL, AWS_*, ...
    services: dict[str, Postgres | S3Server | MlflowServer]

    def pids(self) -> dict[str, list[int]]:
        """Live pids per service."""
        return {name: svc.pids() for name, svc in self.services.items()}

    def dvc_remote_commands(
        self, name: str = DVC_REMOTE, url: str | None = None
    ) -> list[list[str]]:
        """The commands that make the stack's bucket a repo's default DVC remote."""
        return [
            ["dvc", "remote", "add", "-d", name, url or self.dvc_remote_url],
            ["dvc", "remote", "modify", name, "endpointurl", self.s3_endpoint],
        ]

    def export_lines(self) -> str:
        """Shell lines for a user: ``export`` the client settings, then the DVC remote."""
        lines = ["# in every shell that runs the pipeline:"]
        lines += [f"export {k}={self.env[k]}" for k in CLIENT_EXPORTS if k in self.env]
        lines += ["# once per clone of the repo:"]
        lines += [" ".join(cmd) for cmd in self.dvc_remote_commands()]
        return "\n".join(lines)


@contextlib.contextmanager
def team_stack(tmp_dir: str | Path) -> Iterator[TeamStack]:
    """PostgreSQL + moto S3 + ``mlflow server`` under ``tmp_dir``, all removed on exit.

    moto starts while PostgreSQL initialises; the MLflow server runs the schema migrations
    on its first start.

    Args:
        tmp_dir: absent or empty; deleted on exit.

    Yields:
        The running stack.
    """
    root = _prepare_dir(Path(tmp_dir))
    t0 = time.monotonic()
    pg = Postgres(root / "postgres")
    s3srv = S3Server(root / "s3")
    ml: MlflowServer | None = None
    try:
        s3srv.launch()
        backend = pg.start()
        endpoint = s3srv.wait_ready()
        server_env = {"MLFLOW_S3_ENDPOINT_URL": endpoint, **HERMETIC_ENV}
        destination = f"s3://{ARTIFACTS_BUCKET}/mlartifacts"
        ml = MlflowServer(backend, destination, server_env, log_dir=root / "mlflow")
        tracking = ml.start()
        env = {
            **HERMETIC_ENV,
            "MLFLOW_TRACKING_URI": tracking,
            "MLFLOW_S3_ENDPOINT_URL": endpoint,  # for clients that bypass the proxy
            "AWS_ENDPOINT_URL_S3": endpoint,  # boto3/s3fs (DVC) without endpointurl config
        }
        log.info("team stack up in %.1f s under %s", time.monotonic() - t0, root)
        yield TeamStack(
            tmp_dir=root,
            tracking_uri=tracking,
            s3_endpoint=endpoint,
            backend_uri=backend,
            artifacts_destination=destination,
            dvc_remote_url=f"s3://{DVC_BUCKET}/dvc",
            env=env,
            services={"postgres": pg, "s3": s3srv, "mlflow": ml},
        )
    finally:
        # Reverse order: the server first, so it does not log the database vanishing.
        try:
            if ml is not None:
                ml.stop()
        finally:
            try:
                pg.stop()
            finally:
                try:
                    s3srv.stop()
                finally:
                    shutil.rmtree(root, ignore_errors=True)
                    log.info("team stack stopped; %s removed", root)


# ----------------------------------------------------------------------------- make server


def serve_forever(directory: str | Path | None = None, out: IO[str] = sys.stdout) -> int:
    """Run :func:`team_stack` until Ctrl-C, SIGTERM or SIGHUP; print what clients export.

    Everything (database, artifacts, DVC objects) is throw-away: it lives in memory or in
    ``directory``, which is deleted on exit.

    Args:
        directory: absent or empty; default a new temp dir.
        out: where the export lines go.

    Returns:
        0 after a requested stop, 1 when a service died.
    """
    directory = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="team-stack-"))
    stop = threading.Event()

    def _handler(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
        log.info("signal %d: stopping the stack", signum)
        stop.set()

    old = {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    old[signal.SIGHUP] = signal.signal(signal.SIGHUP, _handler)
    status = 0
    try:
        with team_stack(directory) as stack:
            print(stack.export_lines(), file=out, flush=True)
            log.info("serving; Ctrl-C stops the stack and deletes %s", stack.tmp_dir)
            procs = {"s3": stack.services["s3"].proc, "mlflow": stack.services["mlflow"].proc}
            while not stop.wait(1.0):
                dead = [n for n, p in procs.items() if p is not None and p.poll() is not None]
                if not stack.services["postgres"].pids():
                    dead.append("postgres")
                if dead:
                    log.error("service(s) died: %s; stopping the stack", ", ".join(dead))
                    status = 1
                    break
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ops.team_stack [DIR]`` (what ``make server`` runs)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "directory",
        nargs="?",
        help="absent or empty dir for the stack's files (deleted on exit); default: a temp dir",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    try:
        return serve_forever(args.directory)
    except (ServiceError, ValueError) as err:
        log.error("%s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
