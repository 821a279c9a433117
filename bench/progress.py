"""A one-line progress bar on stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import sys
import time

WIDTH = 40


class ProgressBar:
    """Counts toward `goal` requests, or toward `duration_s` of wall time when goal is 0."""

    def __init__(self, goal: int, duration_s: float, enabled: bool) -> None:
        self.goal = goal
        self.duration_s = duration_s
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.last_draw = 0.0

    def fraction(self, done: int) -> float:
        if self.goal > 0:
            return min(1.0, done / self.goal)
        if self.duration_s > 0:
            return min(1.0, (time.monotonic() - self.t0) / self.duration_s)
        return 0.0

    def update(self, done: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last_draw < 0.2 and not force:
            return
        self.last_draw = now
        f = self.fraction(done)
        filled = int(f * WIDTH)
        elapsed = now - self.t0
        line = f"\r {done} / {self.goal or '-'} [{'=' * filled}{' ' * (WIDTH - filled)}] "
        sys.stderr.write(line + f"{f:6.1%} {elapsed:5.1f}s")
        sys.stderr.flush()

    def finish(self, done: int) -> None:
        """Draws the final count and ends the line."""
        if self.enabled:
            self.update(done, force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()
