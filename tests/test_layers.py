"""The import directions of STYLE.md hold: each package imports only the packages below it.

Parses every module with `ast` (no imports are executed) and checks each import against the
table below, for project packages and for the third-party or standard modules a package must
not touch (raft: no I/O at all; engine, wal, snapshot: no gRPC or asyncio).
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROJECT = {"api", "engine", "wal", "snapshot", "raft", "server", "client", "bench", "tests"}

# Which project packages each package may import (besides itself).
ALLOWED = {
    "api": set(),
    "raft": {"api"},
    "wal": {"api"},
    "engine": {"api"},
    "snapshot": {"api", "wal", "engine"},
    "server": {"api", "engine", "wal", "snapshot", "raft"},
    "client": {"api"},
    "bench": {"api", "client", "engine", "wal", "snapshot", "raft", "server"},
    "tests": PROJECT,
}

# Modules a package must never import: Raft is pure; the storage libraries have no async or RPC.
FORBIDDEN = {
    "raft": {
        "asyncio",
        "socket",
        "threading",
        "time",
        "os",
        "io",
        "grpc",
        "lmdb",
        "selectors",
        "subprocess",
        "multiprocessing",
    },
    "engine": {"asyncio", "grpc", "raft", "server"},
    "wal": {"asyncio", "grpc", "lmdb"},
    "snapshot": {"asyncio", "grpc"},
    "api": {"asyncio", "lmdb"},
}


def imported_roots(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_import_directions() -> None:
    violations = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            roots = imported_roots(path)
            bad_project = (roots & PROJECT) - allowed - {package}
            bad_modules = roots & FORBIDDEN.get(package, set())
            for name in sorted(bad_project | bad_modules):
                violations.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not violations, "\n".join(violations)


def test_checker_sees_a_violation(tmp_path: pathlib.Path) -> None:
    """The checker itself works: a module importing asyncio and grpc is reported."""
    module = tmp_path / "m.py"
    module.write_text("import asyncio\nfrom grpc import aio\nfrom engine.store import Store\n")
    assert imported_roots(module) == {"asyncio", "grpc", "engine"}
