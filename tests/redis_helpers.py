"""A real redis-server for the tests: started on 127.0.0.1 at a free port in a temporary
directory, stopped at the end. ``.ci/run`` installs the Debian package when it is missing.
``redis_cluster`` starts three of them as a Redis Cluster the same way.

The module-scoped fixture ``redis_server`` is shared by a test module; each test takes a
fresh key prefix (``prefix``) so tests do not see each other's streams.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
_prefixes = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process (``aof``: appendonly with fsync always, so a restart keeps
    every acknowledged write)."""

    def __init__(self, directory: Path, *, aof: bool = False, cluster: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        self.aof = aof
        self.cluster = cluster
        # The bus port defaults to port + 10000, which may not exist: pick one.
        self.bus_port = free_port() if cluster else 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        if self.aof:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--cluster-port", str(self.bus_port)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("redis-server did not come up")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def _running(service: RedisServer | RedisCluster) -> Iterator[None]:
    if not Path(REDIS_SERVER).exists():
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    try:
        service.start()
        yield
    finally:
        service.stop()


@contextlib.contextmanager
def running_redis(directory: Path, *, aof: bool = False) -> Iterator[RedisServer]:
    server = RedisServer(directory, aof=aof)
    with _running(server):
        yield server


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"t{next(_prefixes)}"


class RedisCluster:
    """A local Redis Cluster of three masters (no replicas), each a redis-server with
    ``cluster-enabled yes`` on 127.0.0.1 in a directory of its own. The slots are assigned
    and the nodes introduced with CLUSTER ADDSLOTSRANGE and CLUSTER MEET (no redis-cli)."""

    def __init__(self, directory: Path) -> None:
        self.nodes = []
        for i in range(3):
            node_dir = directory / f"node{i}"
            node_dir.mkdir()
            self.nodes.append(RedisServer(node_dir, cluster=True))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    @property
    def store_url(self) -> str:
        """What ``RedisStore`` and ``--store`` take for this Cluster."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        import redis

        for node in self.nodes:
            node.start()
        clients = [redis.Redis(port=node.port) for node in self.nodes]
        try:
            step = 16384 // len(clients)
            for i, client in enumerate(clients):
                last = 16383 if i == len(clients) - 1 else (i + 1) * step - 1
                client.execute_command("CLUSTER ADDSLOTSRANGE", i * step, last)
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port, node.bus_port)
            deadline = time.monotonic() + 60
            while not all(_cluster_ok(c, len(clients)) for c in clients):
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not come up")
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_ok(client: Any, size: int) -> bool:
    info = client.execute_command("CLUSTER INFO")
    return bool(info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == size)


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    with _running(cluster):
        yield cluster
