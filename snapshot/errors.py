"""Typed errors of snapshot/."""

from __future__ import annotations


class SnapshotError(Exception):
    """Base of every snapshot error."""


class CorruptSnapshotError(SnapshotError):
    """A .snap file fails its CRC or framing (load() renames it .broken and goes on)."""


class HashMismatchError(SnapshotError):
    """A backend snapshot's SHA-256 trailer does not match its contents."""


class DataDirExistsError(SnapshotError):
    """restore() refuses to write into a data directory that already has a member."""
