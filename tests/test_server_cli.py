"""`petra --help` and `petra --version` answer and exit 0 without touching a data dir."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from server.config import FLAGS, env_name

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_petra(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "server.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_lists_every_flag_and_its_variable(tmp_path: pathlib.Path) -> None:
    done = run_petra("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for flag in FLAGS:
        assert f"--{flag}  ({env_name(flag)})" in done.stdout
    assert list(tmp_path.iterdir()) == [], "--help must not create a data dir"


def test_version_and_bad_flag(tmp_path: pathlib.Path) -> None:
    done = run_petra("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("petra Version: ")
    bad = run_petra("--no-such-flag", cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "petra: flag provided but not defined: -no-such-flag"
