"""Crash-recovery mode (filled in below)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("crash", help="kill -9 / restart cycles, then verify the history")
    p.set_defaults(run=lambda a: 1)
