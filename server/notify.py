"""systemd readiness (Type=notify): send READY=1 to $NOTIFY_SOCKET.

Theory of operation. systemd passes the path of an AF_UNIX datagram socket in NOTIFY_SOCKET; a
name starting with '@' is in the abstract namespace (the '@' stands for a leading NUL byte).
The node calls notify_ready() once it serves clients, as etcd does after it has published
itself to the cluster. Without NOTIFY_SOCKET (not under systemd) it does nothing. A failure to
notify is logged, not raised: systemd will then time the unit out, which is the honest outcome.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _address(name: str) -> str | bytes:
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send one sd_notify state string; True if it was sent."""
    env = os.environ if environ is None else environ
    name = env.get("NOTIFY_SOCKET", "")
    if not name:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(_address(name))
            sock.sendall(state.encode())
    except OSError as e:
        log.warning("cannot notify systemd on %s: %s", name, e)
        return False
    return True


def notify_ready() -> None:
    """READY=1 on $NOTIFY_SOCKET if set."""
    notify("READY=1")
