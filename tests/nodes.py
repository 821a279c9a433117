"""Real node processes for the integration suites: petra (`python -m server.main`) and etcd.

Theory of operation. A `Node` is one member started as a child process with etcd's flags on
free loopback ports, its data in a pytest tmp_path. `start()` returns once the member answers a
linearizable Range on its client port (the check `etcdctl endpoint health` makes), polling with
a deadline; a process that exits before that fails the test with the tail of its log. `stop()`
sends SIGTERM then SIGKILL after a deadline; `kill9()` is the crash. `restart()` reuses the same
ports and data directory. Both kinds share the exact same flags, so a test parametrised over
the `node_kind` fixture runs unchanged against etcd 3.4.23 (which proves the test) and petra.

Helpers: `etcdctl(node, *args)` runs the real etcdctl against a node; `stubs(node)` gives the
gRPC stubs of every service; `LineReader` reads a long-running process's output until expected
lines arrive. These are fixtures and helpers, not a conftest.py: test modules import them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest

from api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from api.v3electionpb import v3election_pb2_grpc
from api.v3lockpb import v3lock_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent
ETCD_BIN = "/usr/bin/etcd"
ETCDCTL_BIN = "/usr/bin/etcdctl"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
KINDS = ("etcd", "petra")


def free_port() -> int:
    """A port nobody listens on right now (the node binds it a moment later; start retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeFailed(Exception):
    """The node process exited or did not become ready in time."""


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    """A test CA and what it signed (tests/tls_certs.py makes them): the node's certificate
    and key, and a client's. With client_cert_auth the node requires client certificates."""

    ca: pathlib.Path
    cert: pathlib.Path
    key: pathlib.Path
    client_cert: pathlib.Path
    client_key: pathlib.Path
    client_cert_auth: bool = False


@dataclasses.dataclass
class Node:
    kind: str  # "etcd" or "petra"
    data_dir: pathlib.Path
    name: str = "n1"
    client_port: int = 0
    peer_port: int = 0
    metrics_port: int = 0
    extra_args: tuple[str, ...] = ()
    # When set, the whole command line instead of the flags above (configuration tests).
    args_override: tuple[str, ...] | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: pathlib.Path | None = None
    starts: int = 0
    tls: TLSFiles | None = None  # serve the client URL over https with these files

    def channel(self, options: Sequence[tuple[str, int]] = (), client_cert: bool = True) -> Any:
        """A gRPC channel to the client URL (over TLS, with the client's certificate unless
        told not to, when the node has TLS files)."""
        if self.tls is None:
            return grpc.insecure_channel(self.endpoint, options=list(options))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.tls.ca.read_bytes(),
            private_key=self.tls.client_key.read_bytes() if client_cert else None,
            certificate_chain=self.tls.client_cert.read_bytes() if client_cert else None,
        )
        return grpc.secure_channel(self.endpoint, credentials, options=list(options))

    def ctl_args(self) -> list[str]:
        """etcdctl's flags to reach this node."""
        args = [f"--endpoints={self.endpoint}"]  # as the outputs tests compare print it
        if self.tls is not None:
            args = [
                f"--endpoints={self.url}",
                f"--cacert={self.tls.ca}",
                f"--cert={self.tls.client_cert}",
                f"--key={self.tls.client_key}",
            ]
        return args

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls is not None else 'http'}://{self.endpoint}"

    def args(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self.name}={peer}",
            "--listen-metrics-urls", f"http://127.0.0.1:{self.metrics_port}",
        ]  # fmt: skip
        if self.tls is not None:
            argv += ["--cert-file", str(self.tls.cert), "--key-file", str(self.tls.key)]
            if self.tls.client_cert_auth:
                argv += ["--client-cert-auth", "--trusted-ca-file", str(self.tls.ca)]
        return argv + list(self.extra_args)

    def command(self) -> list[str]:
        args = self.args() if self.args_override is None else list(self.args_override)
        if self.kind == "etcd":
            return [ETCD_BIN, *args]
        return [sys.executable, "-m", "server.main", *args]

    def _spawn(self) -> None:
        self.starts += 1
        self.log_path = self.data_dir.parent / f"{self.name}-{self.kind}-{self.starts}.log"
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        # etcd reads ETCD_* variables; keep the caller's out of the way unless a test sets them.
        env = {k: v for k, v in env.items() if not k.startswith("ETCD_") or k in self.env}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def start(self, timeout_s: float = START_TIMEOUT_S) -> Node:
        """Start (or restart) and wait until a linearizable read succeeds. On a first start the
        ports are picked free; if another process takes one meanwhile, pick again."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        first = not self.client_port
        for attempt in range(3):
            if first:
                self.client_port, self.peer_port, self.metrics_port = (
                    free_port() for _ in range(3)
                )
            self._spawn()
            try:
                self.wait_ready(timeout_s)
                return self
            except NodeFailed:
                if not (first and attempt < 2 and "address already in use" in self.log_tail()):
                    raise
                self.kill9()
                # A first start may have initialised the data dir for the clashing ports.
                shutil.rmtree(self.data_dir, ignore_errors=True)
        raise AssertionError("unreachable")

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Poll until the port accepts, then until a linearizable Range succeeds. Each gRPC
        attempt uses a fresh channel: a channel whose first connect failed backs off ~1 s."""
        deadline = time.monotonic() + timeout_s
        request = rpc_pb2.RangeRequest(key=b"health")
        while True:
            self._check_alive()
            left = deadline - time.monotonic()
            if left <= 0:
                raise NodeFailed(f"{self.kind} not ready in {timeout_s}s:\n{self.log_tail()}")
            if not self._port_accepts():
                time.sleep(0.005)  # poll interval while the process binds its port
                continue
            with self.channel() as channel:
                try:
                    rpc_pb2_grpc.KVStub(channel).Range(request, timeout=min(left, 0.5))
                    return
                except grpc.RpcError:
                    time.sleep(0.005)  # poll interval while it elects itself

    def _port_accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.client_port), timeout=0.5):
                return True
        except OSError:
            return False

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise NodeFailed(f"{self.kind} exited with {self.proc.returncode}:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited by the deadline; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def kill9(self) -> None:
        """The crash: SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, timeout_s: float = START_TIMEOUT_S) -> Node:
        self.stop()
        return self.start(timeout_s)


def make_node(kind: str, tmp_path: pathlib.Path, name: str = "n1", **kw: object) -> Node:
    base = tmp_path / f"{kind}-{name}"
    base.mkdir(parents=True, exist_ok=True)
    return Node(kind=kind, data_dir=base / "data", name=name, **kw)  # type: ignore[arg-type]


@contextlib.contextmanager
def running(kind: str, tmp_path: pathlib.Path, **kw: object) -> Iterator[Node]:
    node = make_node(kind, tmp_path, **kw)
    try:
        yield node.start()
    finally:
        node.stop()


# --- known petra differences -------------------------------------------------------------


def known_petra_bug(reason: str) -> pytest.MarkDecorator:
    """An expected failure of a petra run, naming the owner's file and the symptom. Strict: once
    the bug is fixed the test reports XPASS as a failure, so the marker gets removed."""
    return pytest.mark.xfail(reason=f"known petra bug: {reason}", strict=True)


def expect_petra_bug(request: pytest.FixtureRequest, kind: str, reason: str) -> None:
    """known_petra_bug for a test parametrised by node kind: applies to the petra run only."""
    if kind == "petra":
        request.applymarker(known_petra_bug(reason))


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(params=KINDS)
def node_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def node(node_kind: str, tmp_path: pathlib.Path) -> Iterator[Node]:
    """A fresh one-member node (etcd or petra) with an empty keyspace."""
    with running(node_kind, tmp_path) as n:
        yield n


@pytest.fixture(scope="module", params=KINDS)
def shared_node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    """One node per module and kind; tests using it keep to their own key prefixes."""
    with running(str(request.param), tmp_path_factory.mktemp("shared")) as n:
        yield n


# --- etcdctl -------------------------------------------------------------------------------


def ctl_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


def etcdctl(
    node: Node, *args: str, input: str | None = None, timeout_s: float = 30.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the real etcdctl against the node; raise with its output if it fails and check."""
    cmd = [ETCDCTL_BIN, *node.ctl_args(), *args]
    done = subprocess.run(
        cmd, input=input, capture_output=True, text=True, env=ctl_env(), timeout=timeout_s
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {done.returncode}\nstdout:\n{done.stdout}\n"
            f"stderr:\n{done.stderr}\n{node.kind} log:\n{node.log_tail()}"
        )
    return done


def etcdctl_popen(node: Node, *args: str) -> subprocess.Popen[str]:
    """A long-running etcdctl (watch, lock, elect) whose output a LineReader follows."""
    cmd = [ETCDCTL_BIN, *node.ctl_args(), *args]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ctl_env(),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


class LineReader:
    """Collects a process's output lines on a thread; `until()` waits for them with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, count: int, timeout_s: float = 15.0) -> list[str]:
        """Wait until at least `count` lines have arrived; return all lines so far."""
        deadline = time.monotonic() + timeout_s
        while len(self.lines) < count:
            left = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(left, 0))
            except queue.Empty:
                raise AssertionError(f"timed out waiting for {count} lines: {self.lines}") from None
            if line is None:
                raise AssertionError(f"process ended after lines: {self.lines}")
            self.lines.append(line)
        return list(self.lines)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._thread.join(5)


# --- gRPC ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Stubs:
    channel: grpc.Channel
    kv: rpc_pb2_grpc.KVStub
    watch: rpc_pb2_grpc.WatchStub
    lease: rpc_pb2_grpc.LeaseStub
    cluster: rpc_pb2_grpc.ClusterStub
    maintenance: rpc_pb2_grpc.MaintenanceStub
    lock: v3lock_pb2_grpc.LockStub
    election: v3election_pb2_grpc.ElectionStub

    def close(self) -> None:
        self.channel.close()


def stubs(node: Node, options: Sequence[tuple[str, int]] = ()) -> Stubs:
    ch = node.channel(options)
    return Stubs(
        channel=ch,
        kv=rpc_pb2_grpc.KVStub(ch),
        watch=rpc_pb2_grpc.WatchStub(ch),
        lease=rpc_pb2_grpc.LeaseStub(ch),
        cluster=rpc_pb2_grpc.ClusterStub(ch),
        maintenance=rpc_pb2_grpc.MaintenanceStub(ch),
        lock=v3lock_pb2_grpc.LockStub(ch),
        election=v3election_pb2_grpc.ElectionStub(ch),
    )


def wait_for(predicate: object, timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll a cheap predicate (a callable) until true or the deadline; fails with `what`."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)  # a poll interval, not a sleep standing in for a condition


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
