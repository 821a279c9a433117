"""Start and stop the servers the bench measures: a fresh petra or a fresh real etcd, on
loopback ports and a temporary data directory; or any command given with placeholders.

Every process is started in its own session, remembered by its pid, and killed by that pid
(its process group) when stopped, so nothing the bench started outlives it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT_S = 30.0


class ServerError(Exception):
    """A server did not start or did not become ready."""


def free_port() -> int:
    """A port that was free a moment ago (bind port 0 on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def petra_command() -> list[str]:
    return [sys.executable, "-m", "server.main"]


def petra_available() -> bool:
    """True when this checkout has the petra node's entry point (server/main.py)."""
    import importlib.util

    return importlib.util.find_spec("server.main") is not None


def etcd_available() -> bool:
    return shutil.which("etcd") is not None


@dataclass
class ServerProcess:
    """One server we started. `command` may hold {data_dir} {client_url} {peer_url}
    {client_port} {peer_port} {name} placeholders; they are filled at each start."""

    kind: str
    command: list[str]
    data_dir: Path
    log_path: Path
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    name: str = "bench"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def argv(self) -> list[str]:
        values = {
            "data_dir": str(self.data_dir),
            "client_url": self.endpoint,
            "peer_url": f"http://127.0.0.1:{self.peer_port}",
            "client_port": str(self.client_port),
            "peer_port": str(self.peer_port),
            "name": self.name,
        }
        return [a.format(**values) for a in self.command]

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = dict(os.environ)
        env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child from here on
        try:
            self.proc = subprocess.Popen(
                self.argv(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        finally:
            log.close()

    def kill(self) -> None:
        """kill -9 the server (and anything it started, by its process group)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after grace_s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=grace_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self, attempts: int = 3) -> float:
        """First start: start and wait until ready; if the process died (say, a port taken
        between free_port() and its bind), retry on new ports. Returns the ready time."""
        for attempt in range(attempts):
            self.start()
            try:
                return self.wait_ready()
            except ServerError:
                if self.alive() or attempt == attempts - 1:
                    self.stop()
                    raise
                self.client_port, self.peer_port = free_port(), free_port()
        raise AssertionError("unreachable")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Waits for a successful linearizable read; returns the seconds it took."""
        from client import Client

        t0 = time.monotonic()
        deadline = t0 + timeout_s
        with Client(self.endpoint, timeout_s=1.0) as c:
            while True:
                if not self.alive():
                    raise ServerError(
                        f"{self.kind} exited with {self.proc.returncode if self.proc else '?'}"
                        f"; log {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    c.get(b"petra-bench/ready")
                    return time.monotonic() - t0
                except Exception:  # noqa: BLE001 - not up yet
                    if time.monotonic() > deadline:
                        raise ServerError(
                            f"{self.kind} not ready after {timeout_s}s; log:\n{self.log_tail()}"
                        ) from None
                    time.sleep(0.02)


# The flags both etcd and petra take for a one-member cluster, as placeholders.
ETCD_STYLE_TEMPLATE = [
    "--name", "{name}",
    "--data-dir", "{data_dir}",
    "--listen-client-urls", "{client_url}",
    "--advertise-client-urls", "{client_url}",
    "--listen-peer-urls", "{peer_url}",
    "--initial-advertise-peer-urls", "{peer_url}",
    "--initial-cluster", "{name}={peer_url}",
]  # fmt: skip


def make_server(kind: str, workdir: Path, command: list[str] | None = None) -> ServerProcess:
    """A server of `kind` under workdir: 'etcd', 'petra', 'ceiling' (the do-nothing KV
    server of bench/server_ceiling.py), or 'custom' with `command`."""
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / f"{kind}.data"
    log_path = workdir / f"{kind}.log"
    if kind == "etcd":
        cmd = ["etcd", *ETCD_STYLE_TEMPLATE]
    elif kind == "petra":
        cmd = [*petra_command(), *ETCD_STYLE_TEMPLATE]
    elif kind == "ceiling":
        cmd = [sys.executable, "-m", "bench.server_ceiling", "{client_port}"]
    else:
        if not command:
            raise ServerError("a custom server needs a command")
        cmd = list(command)
    return ServerProcess(kind, cmd, data_dir, log_path)
