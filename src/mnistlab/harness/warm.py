"""Warm stages: torch and MLflow imported once per pipeline execution, not once a stage.

A torch stage pays ~5 s (2 cores) to import torch and MLflow and open its MLflow store
before any work, and DVC starts every stage as a fresh process. So ``python -m stages
<name>`` (the ``cmd`` of every stage in ``dvc.yaml``) is a light launcher. Under a DVC
process, the first torch stage of an execution starts a *warm server* for that DVC
process. The server imports the third-party modules once and then forks one worker
per stage:

    dvc ─ sh -c ─ python -m stages train ...     the launcher: light, forwards signals
                     │  unix socket: argv, cwd, environment, umask, stdin/out/err
    warm server (torch, mlflow imported) ─ fork ─ worker: runs stages.train as __main__

The worker is the stage. It runs in the launcher's directory with its environment and
file descriptors, and names itself ``stage <name>`` (``ps``, ``/proc/<pid>/comm``).
It watches the launcher and the DVC process as a stage watches its parent (see
:mod:`mnistlab.harness.supervision`) and sends back its exit status. The launcher exits
with that status, so DVC sees what it always saw. Ctrl-C, SIGTERM and SIGHUP sent
to the launcher are passed on to the worker. The server leaves when its DVC process
does.

The stage that starts the server waits while it imports, as long as its own imports
would have taken. A stage module that says ``WARM = False`` (one that imports no torch,
such as ``download``) always runs cold and starts no server. Only third-party modules
are imported warm: each worker imports the project's own code itself, so an edit is
never served stale. A stage runs in the launcher itself, as before, whenever the
hand-off fails or cannot apply: no DVC process above (a stage run by hand), a server
that does not start, a system without ``fork``, or ``MNISTLAB_WARM=0``.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import runpy
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from mnistlab.harness import procs

SWITCH = "MNISTLAB_WARM"  # "0" runs every stage cold, in its own process
# What a torch stage imports from outside the project, ~5 s together on 2 cores; the
# MLflow stores are imported when a run opens (their ORM set-up alone is ~1.5 s).
WARM_MODULES = (
    "numpy",
    "torch",
    "matplotlib.pyplot",
    "pydantic",
    "mlflow",
    "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.store.tracking.rest_store",
)
POLL_S = 0.5  # how often the server checks that its DVC process still runs
START_WAIT_S = 60.0  # the longest a stage waits for a starting server, then runs cold
_LEN = struct.Struct("!I")  # request length
_INT = struct.Struct("!i")  # the worker's pid, then its exit status
USAGE = "usage: python -m stages <stage> [args...]   e.g. python -m stages train --model cnn"


def enabled() -> bool:
    """Whether stages may run warm: Linux (fork, /proc, unix sockets) and not switched off."""
    return (
        os.environ.get(SWITCH, "1") != "0"
        and sys.platform.startswith("linux")
        and hasattr(os, "fork")
        and hasattr(socket, "send_fds")
    )


def socket_path(dvc: procs.ProcInfo) -> Path:
    """The warm server's socket for the DVC process ``dvc`` and this interpreter.

    It lives in a directory only this user can enter; the name is short because unix
    socket paths are limited to ~100 bytes.
    """
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    home = base / f"mnistlab-warm-{os.getuid()}"
    home.mkdir(mode=0o700, exist_ok=True)
    st = home.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{home} is not private to this user")
    key = f"{procs.boot_id()}:{dvc.pid}:{dvc.start}:{sys.executable}"
    return home / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.sock"


# ------------------------------------------------------------------ the launcher side


def launch(argv: list[str]) -> int:
    """Run stage ``argv[0]`` (module ``stages.<argv[0]>``) with ``argv[1:]``.

    Returns:
        The stage's exit status (in-process runs exit through ``SystemExit`` instead).
    """
    if not argv or argv[0].startswith("-") or not argv[0].isidentifier():
        print(USAGE, file=sys.stderr)
        return 2
    module, args = f"stages.{argv[0]}", argv[1:]
    spec = importlib.util.find_spec(module)
    if spec is None:
        print(f"unknown stage {argv[0]}: there is no stages/{argv[0]}.py", file=sys.stderr)
        return 2
    dvc = procs.dvc_ancestor() if enabled() and _runs_warm(spec) else None
    if dvc is not None:
        try:
            path = socket_path(dvc)
        except OSError:
            path = None
        if path is not None:
            server = None
            if not path.exists() and not _starting(path):
                server = _start_server(path, dvc)
            _await_socket(path, server)
            status = _hand_off(path, module, args)
            if status is not None:
                return status
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


def _runs_warm(spec: importlib.machinery.ModuleSpec) -> bool:
    """False for a stage module that says ``WARM = False`` (at its top level): one that
    imports no torch starts cold faster than a server can import it."""
    try:
        tree = ast.parse(Path(spec.origin).read_bytes()) if spec.origin else None
    except (OSError, SyntaxError, ValueError):
        return True
    for node in tree.body if tree else []:
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["WARM"]
            and isinstance(node.value, ast.Constant)
        ):
            return bool(node.value.value)
    return True


def _starting(path: Path) -> bool:
    """Whether a server for ``path`` runs (it holds the lock from start to exit)."""
    import fcntl

    try:
        fd = os.open(path.with_suffix(".lock"), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _await_socket(path: Path, server: subprocess.Popen | None) -> None:
    """Wait while the server imports (~5 s, once per execution): running the stage cold
    meanwhile would cost as long, with two imports sharing the cores. ``server`` is the
    one this launcher started, if any (it may not hold its lock yet)."""
    deadline = time.monotonic() + START_WAIT_S
    while not path.exists() and time.monotonic() < deadline:
        if not _starting(path) and (server is None or server.poll() is not None):
            return  # no server is coming
        time.sleep(0.05)


def _std_fds() -> list[int]:
    """This process's stdin, stdout and stderr (``/dev/null`` for a closed one)."""
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR))
    return fds


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _hand_off(path: Path, module: str, args: list[str]) -> int | None:
    """Have the warm server run the stage; its exit status, or None if none took it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        me = procs.proc_info(os.getpid())
        request = {
            "module": module,
            "args": args,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "umask": _umask(),
            "pid": os.getpid(),
            "start": me.start if me else None,
        }
        body = json.dumps(request).encode()
        socket.send_fds(sock, [_LEN.pack(len(body)) + body], _std_fds())
        got = _recv_exact(sock, _INT.size)
    except OSError:
        sock.close()
        return None
    if got is None:  # the server went away before forking: nothing ran
        sock.close()
        return None
    return _wait(sock, _INT.unpack(got)[0])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _wait(sock: socket.socket, worker: int) -> int:
    """Pass signals on to ``worker`` until it sends its exit status."""

    def forward(signum: int, frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    from mnistlab.harness.supervision import set_parent_death_signal

    set_parent_death_signal(signal.SIGTERM)  # our parent gone: the worker is told too
    with sock:
        got = _recv_exact(sock, _INT.size)
    if got is None:
        print(
            f"mnistlab: the stage's worker process {worker} ended without an exit status "
            "(killed by a signal?)",
            file=sys.stderr,
        )
        return 1
    return _INT.unpack(got)[0]


def _start_server(path: Path, dvc: procs.ProcInfo) -> subprocess.Popen | None:
    """Start the warm server for ``dvc`` in the background; None if it cannot start."""
    cmd = [sys.executable, "-m", "mnistlab.harness.warm", str(path), str(dvc.pid), str(dvc.start)]
    with contextlib.suppress(OSError):
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,  # out of DVC's process group: Ctrl-C goes to stages
        )
    return None


# -------------------------------------------------------------------- the server side


def serve(path: Path, dvc_pid: int, dvc_start: int) -> int:
    """Serve stages of the DVC process ``dvc_pid`` on ``path`` until that process ends."""
    import fcntl

    lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another server already serves this execution
    for name in WARM_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    with contextlib.suppress(Exception):  # the ORM's mappers, configured on first use
        importlib.import_module("sqlalchemy.orm").configure_mappers()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps finished workers
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ready = path.with_suffix(".new")
    try:
        with contextlib.suppress(FileNotFoundError):
            ready.unlink()
        listener.bind(str(ready))
        listener.listen(8)
        os.replace(ready, path)  # launchers see the socket only once it listens
        listener.settimeout(POLL_S)
        while procs.is_alive(dvc_pid, dvc_start):
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            with conn:
                _fork_worker(conn, [listener.fileno(), lock])
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
        for leftover in (path, ready, path.with_suffix(".lock")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        os.close(lock)
    return 0


def _fork_worker(conn: socket.socket, server_fds: list[int]) -> None:
    """Read one launcher's request from ``conn`` and fork its worker."""
    try:
        msg, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        if len(msg) < _LEN.size or len(fds) != 3:
            raise OSError("malformed request")
        size = _LEN.unpack(msg[: _LEN.size])[0]
        body = msg[_LEN.size :]
        rest = _recv_exact(conn, size - len(body)) if len(body) < size else b""
        if rest is None:
            raise OSError("truncated request")
        request = json.loads(body + rest)
    except (OSError, ValueError):
        return
    try:
        if os.fork() == 0:
            code = 70  # EX_SOFTWARE: the worker itself failed
            try:
                for fd in server_fds:  # the worker holds neither the socket nor the lock
                    os.close(fd)
                code = _work(conn, request, fds)
            finally:
                os._exit(code)
    finally:
        for fd in fds:
            os.close(fd)


def _set_name(name: str) -> None:
    """The name ``ps`` shows for this process (15 bytes at most)."""
    from mnistlab.harness.supervision import PR_SET_NAME, prctl

    prctl(PR_SET_NAME, name.encode()[:15])


def _work(conn: socket.socket, request: dict, fds: list[int]) -> int:
    """In the forked worker: become the launcher's stage, run it, report its status."""
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(request["umask"])
    module = request["module"]
    sys.argv = [module, *request["args"]]
    sys.path[0] = request["cwd"]  # as `python -m` would have it
    launcher = procs.proc_info(request["pid"])
    if launcher is None or launcher.start != request["start"]:
        return 1  # the launcher is gone already
    procs.adopt(launcher)
    _set_name(f"stage {module.rsplit('.', 1)[-1]}")
    conn.sendall(_INT.pack(os.getpid()))
    code = _run(module)
    import atexit

    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()  # what a normal exit runs: logging.shutdown, MLflow's
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(OSError):
        conn.sendall(_INT.pack(code))
    return code


def _run(module: str) -> int:
    """Run ``module`` as ``__main__``; its exit status as the interpreter would give it."""
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as err:
        if err.code is None or isinstance(err.code, int):
            return err.code or 0
        print(err.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        return 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":  # the warm server: python -m mnistlab.harness.warm PATH PID START
    sys.exit(serve(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
