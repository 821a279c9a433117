"""The node: assembles engine, WAL, snapshots and Raft behind the etcd v3 gRPC API. The only
package that uses asyncio, gRPC, threads, clocks and the OS."""
