#!/usr/bin/env bash
# Restart after kill -9 with 1,000,000 keys, and RSS, for etcd or petra (issue #5 figures).
# Usage: bench/restart_1m.sh etcd|petra PORT   (needs etcd's Go tool: /work/shared/tools/build-etcd-benchmark.sh)
# Loads 10,000 txns of 100 puts (16 B keys, 256 B values), kill -9, restarts, and times the
# restart until the first linearizable get answers. Data goes under /tmp.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
kind=$1; port=$2; dir=/tmp/petra-restart-$kind; rm -rf $dir
args="--name r --data-dir $dir --listen-client-urls http://127.0.0.1:$port --advertise-client-urls http://127.0.0.1:$port --listen-peer-urls http://127.0.0.1:$((port+10)) --initial-advertise-peer-urls http://127.0.0.1:$((port+10)) --initial-cluster r=http://127.0.0.1:$((port+10))"
start() { if [ $kind = etcd ]; then etcd $args > $dir.log 2>&1 & else PYTHONPATH=$ROOT $ROOT/.venv/bin/python -m server.main $args > $dir.log 2>&1 & fi; echo $!; }
ready() { until ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:$port --command-timeout=1s get health >/dev/null 2>&1; do :; done; }
pid=$(start); ready
${BENCHMARK:-/tmp/etcd-benchmark/bin/benchmark} --endpoints=127.0.0.1:$port --conns=8 --clients=16 txn-put --txn-ops 100 --key-size 16 --val-size 256 --key-space-size 100000000 --total 10000 2>&1 | grep "Requests/sec"
echo "keys: $(ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:$port get "" --from-key --keys-only --limit 1 -w json | grep -o "\"count\":[0-9]*")"
echo "rss after load: $(grep VmRSS /proc/$pid/status)"
kill -9 $pid; sleep 1
t0=$(date +%s.%N); pid=$(start); ready; t1=$(date +%s.%N)
echo "$kind restart to first linearizable get: $(echo "$t1 - $t0" | bc) s"
echo "rss after restart: $(grep VmRSS /proc/$pid/status)"
ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:$port get "" --from-key --keys-only --limit 1 -w json | grep -o "\"count\":[0-9]*"
kill $pid; wait $pid 2>/dev/null
