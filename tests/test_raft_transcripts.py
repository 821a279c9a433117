"""Golden-transcript interaction tests (tests/raft_testdata/*.txt, etcd-raft style).

Each script is run against a scripted cluster and its output compared with the expected
output stored in the file; PETRA_REWRITE=1 regenerates the files (review the diff)."""

from __future__ import annotations

import pathlib

import pytest

from tests.raft_transcript import TESTDATA, rewrite_requested, run_file

SCRIPTS = sorted(TESTDATA.glob("*.txt"))


def test_scripts_exist() -> None:
    """Every scenario named in issue #4 has a transcript."""
    names = {p.stem for p in SCRIPTS}
    for want in (
        "election",
        "split_vote",
        "leader_failure",
        "log_repair",
        "figure8",
        "prevote_rejoin",
        "check_quorum",
        "read_index",
        "membership",
        "leader_transfer",
        "snapshot",
        "single_member",
    ):
        assert want in names


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_transcript(path: pathlib.Path) -> None:
    """The script's output matches the reviewed golden output."""
    text, mismatches = run_file(path)
    if rewrite_requested():
        path.write_text(text)
        return
    assert not mismatches, "\n\n".join(mismatches) + "\n(PETRA_REWRITE=1 regenerates)"
