"""Named failpoints: hooks at each durability step that a crash test can arm.

Theory of operation: production code calls ``failpoints.hit("wal.after_fsync")`` behind a
module-level check, ``if failpoints.armed is not None``, so an unarmed process pays one global
load and one comparison per step. A test arms points either through the environment variable
``PETRA_FAILPOINTS`` (read once, at import, so a child process can be armed by its parent) or
through `arm` in-process.

Syntax of ``PETRA_FAILPOINTS``: comma-separated ``name:action`` or ``name:action@n``, where the
action is ``kill`` (SIGKILL this process: no cleanup, no flush, like a power cut for the page
cache's unsynced data as far as this process is concerned), ``exit`` (``os._exit(70)``) or
``panic`` (raise `FailpointPanic`), and ``@n`` fires on the n-th hit only (1-based; default 1).
Example: ``PETRA_FAILPOINTS=wal.after_fsync:kill@3,snapshot.before_rename:panic``.

snapshot/ and server/ use the same module for their own points.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

ENV_VAR = "PETRA_FAILPOINTS"
ACTIONS = ("kill", "exit", "panic")

# The names used by wal/ and snapshot/. Others may be armed too (server/ adds its own).
KNOWN = (
    "wal.before_write",
    "wal.after_write",
    "wal.before_fsync",
    "wal.after_fsync",
    "wal.before_rename",
    "wal.after_rename",
    "wal.before_save_snapshot",
    "wal.after_save_snapshot",
    "snapshot.before_save",
    "snapshot.before_fsync",
    "snapshot.before_rename",
    "snapshot.after_save",
)


class FailpointPanic(RuntimeError):
    """Raised by a point armed with ``panic``."""


class FailpointSyntaxError(ValueError):
    """``PETRA_FAILPOINTS`` or an `arm` call could not be parsed."""


@dataclass(slots=True)
class _Point:
    action: str | Callable[[str], None]
    fire_at_hit: int
    hits: int = 0


# None when nothing is armed: the only cost a production call site pays.
armed: dict[str, _Point] | None = None


def arm(name: str, action: str | Callable[[str], None], *, at_hit: int = 1) -> None:
    """Arm `name` to run `action` (an action name or a callable taking the point's name)."""
    global armed
    if isinstance(action, str) and action not in ACTIONS:
        raise FailpointSyntaxError(f"unknown failpoint action {action!r} for {name!r}")
    if at_hit < 1:
        raise FailpointSyntaxError(f"failpoint {name!r}: hit number must be >= 1")
    if armed is None:
        armed = {}
    armed[name] = _Point(action, at_hit)


def disarm(name: str) -> None:
    global armed
    if armed is not None:
        armed.pop(name, None)
        if not armed:
            armed = None


def disarm_all() -> None:
    global armed
    armed = None


def hits(name: str) -> int:
    """How often an armed point has been reached (0 if not armed)."""
    point = armed.get(name) if armed is not None else None
    return point.hits if point is not None else 0


def hit(name: str) -> None:
    """Called at a durability step; does the armed action when its hit count comes up."""
    if armed is None:
        return
    point = armed.get(name)
    if point is None:
        return
    point.hits += 1
    if point.hits != point.fire_at_hit:
        return
    action = point.action
    if callable(action):
        action(name)
    elif action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "exit":
        os._exit(70)
    else:
        raise FailpointPanic(f"failpoint {name} fired")


def parse(spec: str) -> list[tuple[str, str, int]]:
    """Parses ``name:action[@n],...`` into (name, action, n) triples."""
    result = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, action = item.partition(":")
        if not sep or not name:
            raise FailpointSyntaxError(f"failpoint {item!r}: expected name:action")
        action, _, count = action.partition("@")
        if action not in ACTIONS:
            raise FailpointSyntaxError(f"failpoint {item!r}: unknown action {action!r}")
        try:
            at_hit = int(count) if count else 1
        except ValueError:
            raise FailpointSyntaxError(f"failpoint {item!r}: bad hit number") from None
        result.append((name, action, at_hit))
    return result


def _arm_from_environment() -> None:
    for name, action, at_hit in parse(os.environ.get(ENV_VAR, "")):
        arm(name, action, at_hit=at_hit)


_arm_from_environment()
