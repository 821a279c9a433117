"""A fake file system for crash tests, after SQLite's crash VFS.

Theory of operation: every file and directory is a node holding what the process sees
(`data` / `entries`) and what is durable (`durable`), plus the operations not yet synced
(`pending`). `datasync` makes a file's pending writes, truncations and preallocations durable;
`sync_dir` makes a directory's pending links, unlinks and renames durable. `crash(rng)` then
decides, for each pending file operation independently, to keep it, drop it or tear it (a
write keeps a random subset of its 512-byte sectors), and for each directory keeps a random
prefix of its pending name operations (a journal commits in order). Afterwards the process's
view is the durable state.

A crash point is a step number: the fake counts every mutating call, and at step `crash_at`
it raises `Crash` (a BaseException, so no `except Exception` in the code under test can eat
it). A write at the crash step is left pending, so it may be torn.
"""

from __future__ import annotations

import posixpath
import random
from dataclasses import dataclass, field

SECTOR_BYTES = 512


class Crash(BaseException):
    """The simulated process died here."""


@dataclass
class FileNode:
    data: bytearray = field(default_factory=bytearray)
    durable: bytearray = field(default_factory=bytearray)
    pending: list[tuple] = field(default_factory=list)


@dataclass
class DirNode:
    entries: dict[str, FileNode | DirNode] = field(default_factory=dict)
    durable: dict[str, FileNode | DirNode] = field(default_factory=dict)
    pending: list[tuple] = field(default_factory=list)


def _apply_file_op(buf: bytearray, op: tuple) -> None:
    kind = op[0]
    if kind == "write":
        _, offset, data = op
        if len(buf) < offset:
            buf.extend(bytes(offset - len(buf)))
        buf[offset : offset + len(data)] = data
    elif kind == "truncate":
        size = op[1]
        if size < len(buf):
            del buf[size:]
        else:
            buf.extend(bytes(size - len(buf)))
    elif kind == "allocate":
        if len(buf) < op[1]:
            buf.extend(bytes(op[1] - len(buf)))
    elif kind == "sectors":
        for offset, data in op[1]:
            _apply_file_op(buf, ("write", offset, data))


def _apply_dir_op(entries: dict, op: tuple) -> None:
    kind = op[0]
    if kind == "link":
        entries[op[1]] = op[2]
    elif kind == "unlink":
        entries.pop(op[1], None)
    elif kind == "rename" and op[1] in entries:
        entries[op[2]] = entries.pop(op[1])


class FakeFile:
    def __init__(self, fs: FakeFS, node: FileNode, path: str) -> None:
        self.fs = fs
        self.node = node
        self.path = path

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        op = ("write", offset, bytes(data))
        _apply_file_op(self.node.data, op)
        self.node.pending.append(op)
        self.fs.step()

    def read_all(self) -> bytes:
        return bytes(self.node.data)

    def datasync(self) -> None:
        self.fs.step()
        self.fs.syncs += 1
        for op in self.node.pending:
            _apply_file_op(self.node.durable, op)
        self.node.pending.clear()

    def truncate(self, size_bytes: int) -> None:
        op = ("truncate", size_bytes)
        _apply_file_op(self.node.data, op)
        self.node.pending.append(op)
        self.fs.step()

    def allocate(self, size_bytes: int) -> None:
        op = ("allocate", size_bytes)
        _apply_file_op(self.node.data, op)
        self.node.pending.append(op)
        self.fs.step()

    def size(self) -> int:
        return len(self.node.data)

    def close(self) -> None:
        pass


class FakeLock:
    def __init__(self, fs: FakeFS, path: str) -> None:
        self.fs = fs
        self.path = path

    def release(self) -> None:
        self.fs.locks.discard(self.path)


class FakeFS:
    def __init__(self, crash_at: int | None = None) -> None:
        self.root = DirNode()
        self.crash_at = crash_at
        self.steps = 0
        self.syncs = 0
        self.locks: set[str] = set()

    # --------------------------------------------------------------- crash control
    def step(self) -> None:
        self.steps += 1
        if self.crash_at is not None and self.steps >= self.crash_at:
            self.crash_at = None
            raise Crash(f"crash at step {self.steps}")

    def crash(self, rng: random.Random) -> None:
        """Resolves every pending operation at random; the process view becomes durable."""
        self.locks.clear()
        self._resolve_dir(self.root, rng)

    def _resolve_dir(self, node: DirNode, rng: random.Random) -> None:
        kept = rng.randint(0, len(node.pending))
        for op in node.pending[:kept]:
            _apply_dir_op(node.durable, op)
        node.pending.clear()
        node.entries = dict(node.durable)
        for child in node.entries.values():
            if isinstance(child, DirNode):
                self._resolve_dir(child, rng)
            else:
                self._resolve_file(child, rng)

    def _resolve_file(self, node: FileNode, rng: random.Random) -> None:
        for op in node.pending:
            fate = rng.randrange(3)
            if fate == 0:
                continue  # dropped
            if fate == 2 and op[0] == "write":
                op = self._tear(op, rng)
            _apply_file_op(node.durable, op)
        node.pending.clear()
        node.data = bytearray(node.durable)

    def _tear(self, op: tuple, rng: random.Random) -> tuple:
        """A write of which only some sectors reached the disk (the rest keep old bytes)."""
        _, offset, data = op
        # Apply sector by sector in a later pass: encode as a multi-write.
        pieces = []
        pos = offset
        end = offset + len(data)
        while pos < end:
            boundary = min(end, (pos // SECTOR_BYTES + 1) * SECTOR_BYTES)
            if rng.random() < 0.5:
                pieces.append((pos, data[pos - offset : boundary - offset]))
            pos = boundary
        return ("sectors", pieces)

    # --------------------------------------------------------------- paths
    def _lookup(self, path: str) -> FileNode | DirNode | None:
        node: FileNode | DirNode = self.root
        for part in [p for p in path.split("/") if p]:
            if not isinstance(node, DirNode) or part not in node.entries:
                return None
            node = node.entries[part]
        return node

    def _parent(self, path: str) -> tuple[DirNode, str]:
        parent = self._lookup(posixpath.dirname(path))
        if not isinstance(parent, DirNode):
            raise FileNotFoundError(path)
        return parent, posixpath.basename(path)

    def _dir_op(self, parent: DirNode, op: tuple) -> None:
        _apply_dir_op(parent.entries, op)
        parent.pending.append(op)
        self.step()

    # --------------------------------------------------------------- the FS surface
    def open(self, path: str, *, create: bool = False) -> FakeFile:
        node = self._lookup(path)
        if node is None:
            if not create:
                raise FileNotFoundError(path)
            parent, name = self._parent(path)
            node = FileNode()
            self._dir_op(parent, ("link", name, node))
        if not isinstance(node, FileNode):
            raise IsADirectoryError(path)
        return FakeFile(self, node, path)

    def read_file(self, path: str) -> bytes:
        node = self._lookup(path)
        if not isinstance(node, FileNode):
            raise FileNotFoundError(path)
        return bytes(node.data)

    def listdir(self, path: str) -> list[str]:
        node = self._lookup(path)
        if not isinstance(node, DirNode):
            raise FileNotFoundError(path)
        return list(node.entries)

    def exists(self, path: str) -> bool:
        return self._lookup(path) is not None

    def mkdir(self, path: str) -> None:
        parent, name = self._parent(path)
        if name in parent.entries:
            raise FileExistsError(path)
        self._dir_op(parent, ("link", name, DirNode()))

    def makedirs(self, path: str) -> None:
        """Test set-up: durable directories, outside the crash model."""
        node = self.root
        for part in [p for p in path.split("/") if p]:
            child = node.entries.get(part)
            if child is None:
                child = DirNode()
                node.entries[part] = child
                node.durable[part] = child
            assert isinstance(child, DirNode)
            node = child

    def rmdir(self, path: str) -> None:
        parent, name = self._parent(path)
        self._dir_op(parent, ("unlink", name))

    def rename(self, src: str, dst: str) -> None:
        assert posixpath.dirname(src) == posixpath.dirname(dst), "only same-directory renames"
        parent, name = self._parent(src)
        if name not in parent.entries:
            raise FileNotFoundError(src)
        self._dir_op(parent, ("rename", name, posixpath.basename(dst)))

    def remove(self, path: str) -> None:
        parent, name = self._parent(path)
        if name not in parent.entries:
            raise FileNotFoundError(path)
        self._dir_op(parent, ("unlink", name))

    def sync_dir(self, path: str) -> None:
        node = self._lookup(path)
        if not isinstance(node, DirNode):
            raise FileNotFoundError(path)
        self.step()
        for op in node.pending:
            _apply_dir_op(node.durable, op)
        node.pending.clear()

    def lock(self, path: str) -> FakeLock | None:
        if path in self.locks:
            return None
        self.locks.add(path)
        return FakeLock(self, path)
