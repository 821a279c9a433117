"""Load generation (petra-bench) and micro-benchmarks.

petra-bench drives any etcd v3 endpoint through the gRPC API only (`api/` via `client/`):
- `cli`: the command line (`python -m bench.cli`, console script `petra-bench`);
- `workloads`, `load`, `progress`: the load workloads, run over spawned worker processes;
- `stats`: etcd benchmark's report (summary, histogram, percentiles), byte for byte;
- `plot`, `png`: charts written as PNG with zlib + struct;
- `compare`, `servers`: fresh petra/etcd processes side by side, and the ceiling server;
- `crash`, `history`, `verify`: kill -9 cycles, the recorded history, the pure verdict.
Scripts: `vs_go` (against etcd's Go tool), `client_cost`, `server_ceiling`, and the other
packages' micro-benchmarks.
See docs/bench.md.
"""
