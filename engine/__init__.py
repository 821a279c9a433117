"""The MVCC store over LMDB: revisions, history, range/put/delete/txn/compact, leases' persistent
state, hash, and the watch hub. A library: no gRPC, no Raft, no asyncio.

Start at engine/store.py (theory of operation); engine/keys.py has the byte layouts."""

from engine import errors
from engine.store import Store
from engine.watch import Compacted, Watcher

__all__ = ["Compacted", "Store", "Watcher", "errors"]
