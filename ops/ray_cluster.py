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
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ops.team_stack import free_port

START_TIMEOUT_S = 120
REGISTER_S = 60  # a worker node's time to register before it is started again
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


# One throwaway driver watches the cluster for the whole start: it connects once (retrying
# while the head's GCS comes up) and prints the tags of the live nodes whenever they change
# (on lines of their own: Ray's driver prints news of dead raylets to stdout too).
# Each node carries its tag as a custom resource (no task asks for it).
_PROBE = """
import json, sys, time
import ray
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        ray.init(address=sys.argv[1], log_to_driver=False)
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
seen = None
while time.monotonic() < deadline:
    tags = sorted(r.removeprefix("mnistlab_node_") for n in ray.nodes() if n["Alive"]
                  for r in n["Resources"] if r.startswith("mnistlab_node_"))
    if tags != seen:
        print("NODES " + json.dumps(tags), flush=True)
        seen = tags
    time.sleep(0.2)
"""


def _tag(name: str) -> str:
    return "--resources=" + json.dumps({f"mnistlab_node_{name}": 1})


class _Probe:
    """The watching driver: :meth:`wait` returns once every wanted node is alive."""

    def __init__(self, address: str, auth: dict[str, str], seconds: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PROBE, address, str(seconds)],
            env=_env(auth),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.alive: set[str] = set()

    def wait(self, want: dict[str, Node], seconds: float) -> set[str]:
        """Until every node of ``want`` (tag: node) is alive or has exited, or ``seconds``
        pass; returns the tags alive then."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pending = [t for t, n in want.items() if t not in self.alive and n.proc.poll() is None]
            if not pending:
                break
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError("the Ray probe driver exited before the cluster was up")
                if line.startswith("NODES "):  # Ray prints its own news here too
                    self.alive = set(json.loads(line.removeprefix("NODES ")))
        return set(want) & self.alive

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@contextlib.contextmanager
def local_cluster(
    workers: int = 2, cpus_per_worker: int = 1, env: dict[str, str] | None = None
) -> Iterator[Cluster]:
    """A head (no CPUs: it schedules, runs no task) and ``workers`` worker nodes; ``env``
    is the environment of every node (and so of the tasks), default ours.

    The worker nodes start together once the head is up; one that has not registered in
    ``REGISTER_S`` is killed and started again (up to ``START_ATTEMPTS`` times). Ray's
    session folder lives under a short temp path (its unix sockets must fit in 107
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
    head = _start("head", ["--head", *head_only, "--num-cpus=0", _tag("head"), *common], root, env)
    cluster = Cluster(address, root, head, auth)
    probe = _Probe(address, auth, START_TIMEOUT_S * (START_ATTEMPTS + 1))
    started: dict[str, Node] = {}  # the latest node started in each worker slot
    try:
        if probe.wait({"head": head}, START_TIMEOUT_S) != {"head"}:
            raise RuntimeError(f"the Ray head did not come up: {head.log.read_text()[-2000:]}")
        args = [f"--address={address}", f"--num-cpus={cpus_per_worker}", *common]
        slots = [f"worker{i + 1}" for i in range(workers)]
        # All together first; a node that did not register (Ray gives a raylet 30 s,
        # whatever the load) is killed and started again, alone this time.
        tries = dict.fromkeys(slots, 0)
        while missing := [s for s in slots if s not in probe.alive]:
            if any(tries[s] == START_ATTEMPTS for s in missing):
                logs = " | ".join(started[s].log.read_text()[-500:] for s in missing)
                raise RuntimeError(f"Ray worker nodes {missing} did not register: {logs}")
            for slot in missing if not started else missing[:1]:
                if slot in started:
                    cluster.kill(started[slot])
                tries[slot] += 1
                name = slot + (f"-{tries[slot]}" if tries[slot] > 1 else "")
                started[slot] = _start(name, [*args, _tag(slot)], root, env)
            if head.proc.poll() is not None:
                raise RuntimeError(f"the Ray head exited: {head.log.read_text()[-2000:]}")
            probe.wait(started, REGISTER_S)
        cluster.workers.extend(started[s] for s in slots)
        probe.close()  # it polls; the sweep needs the CPU
        yield cluster
    finally:
        probe.close()
        nodes = [*started.values(), head]  # cluster.workers, or fewer if the start failed
        procs = _procs([p for n in nodes for p in n.pids()])  # before the tops go: orphans
        for node in nodes:
            with contextlib.suppress(Exception):
                node.proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its node
        _, left = psutil.wait_procs(procs, timeout=30)
        for p in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(left, timeout=30)
        for node in nodes:
            with contextlib.suppress(Exception):
                node.proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
