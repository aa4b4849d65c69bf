"""A real Ray cluster on one machine: a head and worker nodes, each a separate ``ray start
--block`` process with its own working folder, on 127.0.0.1. For the sweep tests and the
sweep benchmark; a team points ``RAY_ADDRESS`` at its own cluster instead.

    with local_cluster(workers=2) as cluster:
        env = {**os.environ, **cluster.client_env}  # address + this cluster's auth token
        ...
        cluster.kill(cluster.workers[1])  # a node lost mid-sweep

Each node's Ray processes are its ``ray start`` process's descendants: stopping the cluster
(or one node) kills exactly those, never another cluster on the machine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

START_TIMEOUT_S = 120
START_ATTEMPTS = 3  # per worker node


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    workdir: Path  # MNISTLAB_SWEEP_WORKDIR of the tasks it runs
    log: Path

    def pids(self) -> list[int]:
        """The node's live processes: its ``ray start`` and every descendant."""
        try:
            top = psutil.Process(self.proc.pid)
            return [top.pid, *(p.pid for p in top.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []


@dataclass
class Cluster:
    address: str  # host:port of the head's GCS, for RAY_ADDRESS
    root: Path
    head: Node
    auth: dict[str, str]  # token authentication, as every node and driver must present it
    workers: list[Node] = field(default_factory=list)

    @property
    def client_env(self) -> dict[str, str]:
        """What a driver's environment needs to reach this cluster."""
        return {"RAY_ADDRESS": self.address, **self.auth}

    def kill(self, node: Node) -> None:
        """SIGKILL a node and everything it started: a machine lost, not a shutdown."""
        pids = node.pids()
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        psutil.wait_procs(_procs(pids), timeout=30)
        node.proc.wait(timeout=30)

    def alive(self) -> list[int]:
        """Pids of this cluster's processes still running."""
        return [p for n in (self.head, *self.workers) for p in n.pids()]


def _procs(pids: list[int]) -> list[psutil.Process]:
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            out.append(psutil.Process(pid))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray() -> str:
    return str(Path(sys.executable).parent / "ray")


def _env(
    extra: dict[str, str] | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in (base or os.environ).items() if k != "RAY_ADDRESS"}
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", **(extra or {})})
    return env


def _start(name: str, args: list[str], root: Path, env: dict[str, str] | None) -> Node:
    workdir = root / name
    workdir.mkdir(parents=True)
    log = root / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [_ray(), "start", "--block", "--disable-usage-stats", *args],
            cwd=workdir,
            env=_env({"MNISTLAB_SWEEP_WORKDIR": str(workdir)}, env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal reaches the test, not the node
        )
    return Node(name, proc, workdir, log)


def _wait_nodes(address: str, n: int, nodes: list[Node], auth: dict[str, str]) -> None:
    """Until ``n`` nodes are alive in the cluster (``ray.nodes`` from a throwaway driver)."""
    code = (
        "import ray, sys\n"
        f"ray.init(address='{address}', log_to_driver=False)\n"
        "print(sum(1 for n in ray.nodes() if n['Alive']))\n"
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for node in nodes:
            if node.proc.poll() is not None:
                raise RuntimeError(f"ray node {node.name} exited: {node.log.read_text()[-2000:]}")
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=_env(auth),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode == 0 and proc.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(1)
    raise RuntimeError(f"the Ray cluster did not reach {n} nodes in {START_TIMEOUT_S} s")


@contextlib.contextmanager
def local_cluster(
    workers: int = 2, cpus_per_worker: int = 1, env: dict[str, str] | None = None
) -> Iterator[Cluster]:
    """A head (no CPUs: it schedules, runs no task) and ``workers`` worker nodes; ``env``
    is the environment of every node (and so of the tasks), default ours.

    Ray's session folder lives under a short temp path (its unix sockets must fit in 107
    bytes); everything is killed and removed on exit, even when the body raises.
    """
    root = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    # Ray 2.60 authenticates with a token; ~/.ray/auth_token may hold another cluster's
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {**(env if env is not None else os.environ), **auth}
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1"]
    head_only = [f"--port={port}", f"--temp-dir={root / 'ray'}", "--include-dashboard=false"]
    head = _start("head", ["--head", *head_only, "--num-cpus=0", *common], root, env)
    cluster = Cluster(address, root, head, auth)
    try:
        _wait_nodes(address, 1, [head], auth)
        args = [f"--address={address}", f"--num-cpus={cpus_per_worker}", *common]
        for i in range(workers):  # one at a time: a loaded machine starts them slowly
            for attempt in range(1, START_ATTEMPTS + 1):
                node = _start(
                    f"worker{i + 1}" + (f"-{attempt}" if attempt > 1 else ""), args, root, env
                )
                try:
                    _wait_nodes(address, 2 + i, [head, node], auth)
                except RuntimeError:
                    # Ray gives a raylet 30 s to register, whatever the load; try again
                    cluster.kill(node)
                    if attempt == START_ATTEMPTS:
                        raise
                    continue
                cluster.workers.append(node)
                break
        yield cluster
    finally:
        procs = _procs(cluster.alive())  # before the tops go: orphans leave their tree
        for node in [*cluster.workers, head]:
            with contextlib.suppress(Exception):
                node.proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its node
        _, left = psutil.wait_procs(procs, timeout=30)
        for p in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(left, timeout=30)
        for node in [*cluster.workers, head]:
            with contextlib.suppress(Exception):
                node.proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
