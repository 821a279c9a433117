"""The MVCC store over LMDB: revisions, history, range/put/delete/txn/compact, leases' persistent
state, hash, and the watch hub. A library: no gRPC, no Raft, no asyncio."""
