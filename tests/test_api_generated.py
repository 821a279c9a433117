"""The committed modules of api/ are what `python -m api.generate` makes from the .proto files.

Regenerates into a temporary directory and compares every generated file byte for byte, so a
.proto edited without regenerating (or a hand-edited module) fails here.
"""

from __future__ import annotations

import pathlib

from api import generate


def test_generated_modules_are_fresh(tmp_path: pathlib.Path) -> None:
    generate.generate(tmp_path)
    fresh = generate.generated_files(tmp_path)
    committed = generate.generated_files(generate.API.parent)
    committed = [p for p in committed if p.parts[0] == "api"]
    assert fresh == committed, "generated file set differs: run `make proto`"
    stale = [
        str(p) for p in fresh if (tmp_path / p).read_bytes() != (generate.ROOT / p).read_bytes()
    ]
    assert not stale, f"stale generated modules (run `make proto`): {stale}"


def test_wire_names_match_etcd() -> None:
    """Spot-check the names etcd clients depend on: full service names and a few field numbers."""
    from api.etcdserverpb import rpc_pb2
    from api.mvccpb import kv_pb2
    from api.v3electionpb import v3election_pb2
    from api.v3lockpb import v3lock_pb2

    services = {
        s.full_name
        for mod in (rpc_pb2, v3lock_pb2, v3election_pb2)
        for s in mod.DESCRIPTOR.services_by_name.values()
    }
    assert services == {
        "etcdserverpb.KV",
        "etcdserverpb.Watch",
        "etcdserverpb.Lease",
        "etcdserverpb.Cluster",
        "etcdserverpb.Maintenance",
        "etcdserverpb.Auth",
        "v3lockpb.Lock",
        "v3electionpb.Election",
    }
    assert rpc_pb2.Compare.DESCRIPTOR.fields_by_name["range_end"].number == 64
    assert rpc_pb2.WatchResponse.DESCRIPTOR.fields_by_name["events"].number == 11
    assert kv_pb2.KeyValue.DESCRIPTOR.fields_by_name["lease"].number == 6
    # A KeyValue encoded by etcd (key "a", create 2, mod 3, version 1, value "b").
    etcd_bytes = bytes.fromhex("0a0161100218032001" + "2a0162")
    kv = kv_pb2.KeyValue.FromString(etcd_bytes)
    assert (kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value) == (
        b"a",
        2,
        3,
        1,
        b"b",
    )
