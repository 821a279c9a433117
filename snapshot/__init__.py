"""Snapshot files, and consistent copies of the LMDB backend to stream and to restore from.

snaps = Snapshotter(dir); snaps.save(term, index, data); snaps.load(); snaps.purge(keep=5)
backend.stream(env) -> chunks + SHA-256 trailer; backend.restore(file, data_dir)
"""

from snapshot import backend, errors
from snapshot.snapshotter import Snapshotter

__all__ = ["Snapshotter", "backend", "errors"]
