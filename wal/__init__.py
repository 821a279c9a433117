"""The write-ahead log: typed, CRC-chained, append-only records in preallocated segment files.
Knows nothing of Raft semantics; no asyncio."""
