"""Open a data directory: bootstrap a new member, or recover one from snapshot + WAL tail.

Theory of operation (DESIGN.md "Recovery"): open the engine and read its consistent index;
load the newest snapshot; open the WAL from that snapshot (the WAL repairs a torn tail and
refuses corruption elsewhere); rebuild Raft's MemoryStorage from the snapshot, the hard state
and the entries after it; and start Raft with `applied` = the snapshot index, so Raft
re-delivers the committed entries after it: membership changes among them are replayed, and
the applier skips the others up to the engine's consistent index, so only what the engine
lacks is applied again. Nothing here scans the
keys: start-up time depends on the WAL tail (bounded by snapshot-count), not on the data.

The WAL metadata names the member and the cluster; a data dir written for another cluster
(another token or member list) is refused rather than silently joined.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from .config import Config
from .ids import cluster_id, member_id, parse_initial_cluster

log = logging.getLogger(__name__)


class DataDirError(Exception):
    """The data dir cannot be used; str(e) is the one line main prints."""


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    member_id: int
    cluster_id: int
    # (member id, name, peer URLs) of every initial member, in initial-cluster order.
    members: tuple[tuple[int, str, tuple[str, ...]], ...]


@dataclass(slots=True)
class Recovered:
    identity: Identity
    store: Any
    wal: Any
    snapshotter: Any
    memory: Any
    raw_node: Any
    applied_index: int
    snapshot_index: int
    new: bool
    # Alarms as of the snapshot; the applier replays alarm entries after it.
    alarms: set[tuple[int, int]] = field(default_factory=set)


def identity_of(config: Config) -> Identity:
    initial = config.initial_cluster or f"{config.name}={config.initial_advertise_peer_urls[0]}"
    by_name: dict[str, list[str]] = {}
    for name, url in parse_initial_cluster(initial):
        by_name.setdefault(name, []).append(url)
    members = tuple(
        (member_id(urls, config.initial_cluster_token), name, tuple(urls))
        for name, urls in by_name.items()
    )
    if config.name not in by_name:
        raise DataDirError(
            f"couldn't find local name {config.name!r} in the initial cluster configuration"
        )
    me = next(m for m in members if m[1] == config.name)
    return Identity(config.name, me[0], cluster_id(m[0] for m in members), members)


def data_dir_of(config: Config) -> str:
    return config.data_dir or f"{config.name}.petra"


def quota_bytes_of(config: Config) -> int:
    if config.quota_backend_bytes < 0:
        return 0
    return config.quota_backend_bytes or 2 * 1024**3


def _metadata(identity: Identity) -> bytes:
    return json.dumps(
        {
            "member_id": identity.member_id,
            "cluster_id": identity.cluster_id,
            "name": identity.name,
            "members": [[m, n, list(u)] for m, n, u in identity.members],
        }
    ).encode()


def _prepare_dirs(root: str) -> tuple[str, str, str]:
    member = os.path.join(root, "member")
    paths = tuple(os.path.join(member, d) for d in ("wal", "snap", "db"))
    try:
        os.makedirs(member, mode=0o700, exist_ok=True)
        for path in paths[1:]:
            os.makedirs(path, mode=0o700, exist_ok=True)
        probe = os.path.join(member, ".probe")
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise DataDirError(f"cannot access data directory {root!r}: {exc.strerror}") from exc
    return paths  # type: ignore[return-value]


def _raft_config(config: Config, identity: Identity, memory: Any, applied: int) -> Any:
    import random

    import raft

    election_tick = max(1, config.election_timeout_ms // max(1, config.heartbeat_interval_ms))
    return raft.Config(
        id=identity.member_id,
        election_tick=election_tick,
        heartbeat_tick=1,
        storage=memory,
        rng=random.Random(identity.member_id ^ int.from_bytes(os.urandom(4), "big")),
        pre_vote=True,
        check_quorum=True,
        max_size_per_msg=1 << 20,
        max_inflight_msgs=256,
        applied=applied,
    )


def open_node_storage(config: Config) -> Recovered:
    """Open (or create) everything on disk for this member; raises DataDirError."""
    import lmdb

    from snapshot.errors import SnapshotError
    from wal.errors import WALError

    root = data_dir_of(config)
    try:
        return _open(config, root)
    except (WALError, SnapshotError, lmdb.Error) as exc:
        raise DataDirError(f"data dir {root!r}: {exc}") from exc


def _open(config: Config, root: str) -> Recovered:
    import raft
    from engine import Store
    from wal import WAL

    identity = identity_of(config)
    wal_dir, snap_dir, db_dir = _prepare_dirs(root)
    has_wal = os.path.isdir(wal_dir) and any(n.endswith(".wal") for n in os.listdir(wal_dir))
    snapshotter = _snapshotter(snap_dir)
    memory = raft.MemoryStorage()
    if not has_wal:
        if os.path.isdir(wal_dir) and not os.listdir(wal_dir):
            os.rmdir(wal_dir)  # WAL.create wants to make the directory itself
        # The WAL first: it holds the lock that keeps a second process off this data dir.
        wal = WAL.create(wal_dir, _metadata(identity))
        store = Store.open(db_dir, quota_bytes=quota_bytes_of(config))
        raw = raft.RawNode(
            _raft_config(config, identity, memory, 0),
            peers=[m[0] for m in identity.members],
        )
        return Recovered(identity, store, wal, snapshotter, memory, raw, 0, 0, True)
    loaded, (wal, metadata, hard_state, entries) = _open_wal(wal_dir, snapshotter)
    try:
        _check_identity(identity, metadata, root)
        store = Store.open(db_dir, quota_bytes=quota_bytes_of(config))
    except BaseException:
        wal.close()
        raise
    snap_index = loaded[1] if loaded else 0
    alarms = snapshot_alarms(loaded)
    if loaded:
        memory.apply_snapshot(_decode_snapshot(loaded))
    if entries:
        memory.append([raft.Entry(e.term, e.index, e.type, e.data) for e in entries])
    # The engine may have applied past the commit index the WAL last synced (a commit-only
    # hard state is written without fsync); what was applied was committed.
    commit = max(hard_state.commit, min(store.consistent_index, memory.last_index()))
    memory.set_hard_state(raft.HardState(hard_state.term, hard_state.vote, commit))
    # Raft re-delivers the committed entries after the snapshot: the applier skips those at
    # or below the engine's consistent index, and membership changes among them are replayed.
    # A member killed during its first start, before its bootstrap entries reached the WAL,
    # has a log with no membership at all: bootstrap it again, or it never elects a leader.
    never_started = not loaded and not entries and hard_state.term == 0
    peers = [m[0] for m in identity.members] if never_started else []
    raw = raft.RawNode(_raft_config(config, identity, memory, snap_index), peers=peers)
    # What the engine holds is applied, whatever Raft re-delivers: reads may rely on it.
    engine_applied = max(snap_index, store.consistent_index)
    return Recovered(
        identity, store, wal, snapshotter, memory, raw, engine_applied, snap_index, False, alarms
    )


class _Excluding:
    """The (term, index) pairs not in `excluded`: snapshots the WAL has not disowned."""

    def __init__(self) -> None:
        self.excluded: set[tuple[int, int]] = set()

    def __contains__(self, pair: object) -> bool:
        return pair not in self.excluded


def _open_wal(wal_dir: str, snapshotter: Any) -> tuple[Any, Any]:
    """The newest snapshot that the WAL also records, and the WAL opened from it.

    A crash between writing a .snap file and the WAL's snapshot record leaves a snapshot the
    WAL does not know; like etcd 3.4.23, fall back to an older one (or none)."""
    from wal import WAL, SnapshotMarker
    from wal.errors import SnapshotMismatchError, SnapshotNotFoundError

    acceptable = _Excluding()
    while True:
        loaded = snapshotter.load(acceptable) if snapshotter is not None else None
        term, index = (loaded[0], loaded[1]) if loaded else (0, 0)
        try:
            return loaded, WAL.open(wal_dir, SnapshotMarker(index, term))
        except (SnapshotNotFoundError, SnapshotMismatchError):
            if loaded is None:
                raise
            acceptable.excluded.add((term, index))
            log.warning("snapshot %d-%d is not in the WAL; using an older one", term, index)


def _snapshotter(snap_dir: str) -> Any:
    try:
        from snapshot import Snapshotter
    except ImportError:  # snapshot/ not merged yet: run without snapshots
        return None
    return Snapshotter(snap_dir)


def _check_identity(identity: Identity, metadata: bytes, root: str) -> None:
    try:
        stored = json.loads(metadata)
    except ValueError as exc:
        raise DataDirError(f"data dir {root!r}: unreadable WAL metadata") from exc
    if stored.get("cluster_id") != identity.cluster_id:
        raise DataDirError(
            f"data dir {root!r} belongs to cluster {stored.get('cluster_id', 0):x}, "
            f"not {identity.cluster_id:x} (check --initial-cluster and --initial-cluster-token)"
        )
    if stored.get("member_id") != identity.member_id:
        raise DataDirError(
            f"data dir {root!r} belongs to member {stored.get('member_id', 0):x}, "
            f"not {identity.member_id:x}"
        )


def encode_snapshot_data(
    voters: list[int], learners: list[int], alarms: list[tuple[int, int]]
) -> bytes:
    """The .snap payload: the membership, and the alarms (state of the log the engine does
    not keep; entries after the snapshot replay the rest at start)."""
    body = {"voters": voters, "learners": learners, "alarms": [list(a) for a in alarms]}
    return json.dumps(body).encode()


def snapshot_alarms(loaded: tuple[int, int, bytes] | None) -> set[tuple[int, int]]:
    if loaded is None or not loaded[2]:
        return set()
    return {(int(m), int(a)) for m, a in json.loads(loaded[2]).get("alarms", [])}


def _decode_snapshot(loaded: tuple[int, int, bytes]) -> Any:
    import raft

    term, index, data = loaded
    body = json.loads(data) if data else {"voters": [], "learners": []}
    conf = raft.ConfState(voters=tuple(body["voters"]), learners=tuple(body["learners"]))
    return raft.Snapshot(data=data, index=index, term=term, conf_state=conf)
