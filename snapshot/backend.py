"""Consistent copies of the LMDB backend: stream one out, restore a data directory from one.

Theory of operation: `stream` runs `env.copyfd` (a compacting copy inside one LMDB read
transaction, so writers go on and the copy is one consistent state) on a helper thread into a
pipe, and yields the pipe's bytes in fixed-size chunks, then (by default) the 32-byte SHA-256
of everything before it: the trailer `etcdctl snapshot save` / `etcdutl snapshot restore`
expect. py-lmdb releases the GIL inside copyfd, so the reader and the copy run together and
memory stays at one chunk. `restore` checks that trailer, writes `<data-dir>/member/db`
through a temporary directory, and resets the consistent index to 0 through the engine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Iterator
from typing import Any

from engine import Store
from snapshot.errors import DataDirExistsError, HashMismatchError, SnapshotError
from wal import failpoints

CHUNK_BYTES_DEFAULT = 32 * 1024
SHA256_BYTES = 32
DB_FILE = "data.mdb"


def stream(
    env: Any, chunk_bytes: int = CHUNK_BYTES_DEFAULT, *, trailer: bool = True
) -> Iterator[bytes]:
    """Yields a consistent copy of `env` in chunks of `chunk_bytes` (the last may be
    shorter), then, if `trailer`, one 32-byte chunk: SHA-256 of all the bytes before it.
    Closing the iterator early stops the copy."""
    assert chunk_bytes > 0
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def copy() -> None:
        try:
            env.copyfd(write_fd, compact=True)
        except BaseException as exc:  # reported to the reader below, never swallowed
            failure.append(exc)
        finally:
            os.close(write_fd)

    copier = threading.Thread(target=copy, name="snapshot-copy", daemon=True)
    copier.start()
    digest = hashlib.sha256()
    finished = False
    try:
        for chunk in _chunks(read_fd, chunk_bytes):
            digest.update(chunk)
            yield chunk
        finished = True
    finally:
        os.close(read_fd)  # an early close makes the copier's write fail with EPIPE
        copier.join()
    if finished and failure:
        raise SnapshotError(f"backend copy failed: {failure[0]}") from failure[0]
    if trailer:
        yield digest.digest()


def _chunks(fd: int, chunk_bytes: int) -> Iterator[bytes]:
    pending = bytearray()
    while True:
        data = os.read(fd, max(chunk_bytes - len(pending), 65536))
        if not data:
            break
        pending += data
        while len(pending) >= chunk_bytes:
            yield bytes(pending[:chunk_bytes])
            del pending[:chunk_bytes]
    if pending:
        yield bytes(pending)


def save(env: Any, path: str, chunk_bytes: int = CHUNK_BYTES_DEFAULT) -> int:
    """Writes a consistent copy with its SHA-256 trailer to `path` (via `<path>.part`,
    fsynced, renamed), as `etcdctl snapshot save` does. Returns the bytes written."""
    part = path + ".part"
    written = 0
    with open(part, "wb") as f:
        for chunk in stream(env, chunk_bytes):
            f.write(chunk)
            written += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.rename(part, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))
    return written


def restore(snapshot_file: str, data_dir: str, *, skip_hash_check: bool = False) -> None:
    """Writes `<data_dir>/member/db` from a backend snapshot, consistent index 0.

    Checks the SHA-256 trailer when the file has one (size mod 512 == 32, as etcdutl
    decides) and requires it unless `skip_hash_check`. Keys, history and leases are kept;
    the server then starts a new member and cluster (new WAL, new identity) on it.
    """
    member = os.path.join(data_dir, "member")
    if os.path.exists(member):
        raise DataDirExistsError(f"data-dir {data_dir!r} already has a member directory")
    size = os.path.getsize(snapshot_file)
    has_hash = size % 512 == SHA256_BYTES
    if not has_hash and not skip_hash_check:
        raise HashMismatchError("snapshot missing hash but --skip-hash-check=false")
    db_tmp = os.path.join(member, "db.tmp")
    os.makedirs(db_tmp)
    try:
        _copy_checked(snapshot_file, os.path.join(db_tmp, DB_FILE), size, has_hash)
        store = Store.open(db_tmp)
        try:
            with store.write_batch() as batch:
                batch.set_consistent_index(0)
        finally:
            store.close()
    except BaseException:
        shutil.rmtree(member)  # nothing half-restored is left behind to be started
        raise
    failpoints.hit("snapshot.before_rename")
    os.rename(db_tmp, os.path.join(member, "db"))
    _fsync_dir(member)
    _fsync_dir(data_dir)


def _copy_checked(src: str, dst: str, size: int, has_hash: bool) -> None:
    body_bytes = size - SHA256_BYTES if has_hash else size
    digest = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        left = body_bytes
        while left:
            chunk = fin.read(min(left, 1 << 20))
            if not chunk:
                raise SnapshotError(f"{src} ended early")
            digest.update(chunk)
            fout.write(chunk)
            left -= len(chunk)
        if has_hash and fin.read(SHA256_BYTES) != digest.digest():
            raise HashMismatchError(f"{src}: SHA-256 trailer does not match its contents")
        fout.flush()
        os.fsync(fout.fileno())


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
