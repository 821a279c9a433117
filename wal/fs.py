"""The file layer the WAL (and snapshot/) does all its I/O through.

`OsFS` is the real one. Tests swap in a fake (tests/crashfs.py) that keeps unsynced writes
pending and, at a simulated crash, keeps, drops or tears each of them, after SQLite's crash
VFS. The surface is small on purpose: every durability-relevant call is one method here.
"""

from __future__ import annotations

import fcntl
import os
from typing import Protocol

Buffer = bytes | bytearray | memoryview


class File(Protocol):
    def pwrite(self, data: Buffer, offset: int) -> None: ...
    def read_all(self) -> bytes: ...
    def datasync(self) -> None: ...
    def truncate(self, size_bytes: int) -> None: ...
    def allocate(self, size_bytes: int) -> None: ...
    def size(self) -> int: ...
    def close(self) -> None: ...


class Lock(Protocol):
    def release(self) -> None: ...


class FS(Protocol):
    def open(self, path: str, *, create: bool = False) -> File: ...
    def read_file(self, path: str) -> bytes: ...
    def listdir(self, path: str) -> list[str]: ...
    def exists(self, path: str) -> bool: ...
    def mkdir(self, path: str) -> None: ...
    def rmdir(self, path: str) -> None: ...
    def rename(self, src: str, dst: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def sync_dir(self, path: str) -> None: ...
    def lock(self, path: str) -> Lock | None: ...


class OsFile:
    __slots__ = ("fd", "path")

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    def pwrite(self, data: Buffer, offset: int) -> None:
        view = memoryview(data)
        # Regular files rarely write short, but a signal or a full disk can make them.
        while view:
            written = os.pwrite(self.fd, view, offset)
            if written <= 0:
                raise OSError(f"pwrite wrote {written} bytes to {self.path}")
            view = view[written:]
            offset += written

    def read_all(self) -> bytes:
        size = os.fstat(self.fd).st_size
        chunks = []
        offset = 0
        while offset < size:
            chunk = os.pread(self.fd, size - offset, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def datasync(self) -> None:
        os.fdatasync(self.fd)

    def truncate(self, size_bytes: int) -> None:
        os.ftruncate(self.fd, size_bytes)

    def allocate(self, size_bytes: int) -> None:
        try:
            os.posix_fallocate(self.fd, 0, size_bytes)
        except OSError:
            # Some file systems (tmpfs on old kernels) cannot preallocate: grow the file
            # instead, so readers still see zeroes where no record was written.
            if os.fstat(self.fd).st_size < size_bytes:
                os.ftruncate(self.fd, size_bytes)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        os.close(self.fd)


class OsLock:
    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        os.close(self.fd)


class OsFS:
    """The real file system."""

    def open(self, path: str, *, create: bool = False) -> OsFile:
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        return OsFile(os.open(path, flags, 0o600), path)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o700)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, path: str) -> OsLock | None:
        """An exclusive flock on `path`, or None if another holder has it."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return OsLock(fd)
