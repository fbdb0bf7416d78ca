#!/usr/bin/env bash
# Memory of one `skiff up` process: RSS idle with three hollow nodes (runtime = "sim"),
# then with 1,000 simulated pods running on them (an RC of 1,000 replicas).
#
#   scripts/bench-memory.sh [path/to/skiff] [pods]
#
# RUNTIME=docker runs the three nodes on the local Docker Engine instead and measures the
# idle process only.
#
# Without a binary it builds and uses the release one. RSS is VmRSS from /proc/<pid>/status,
# read after the process has settled for 10 s.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/build-env.sh"

bin="${1:-}"
pods="${2:-1000}"
runtime="${RUNTIME:-sim}"
if [ -z "$bin" ]; then
    cargo build --release --bin skiff
    bin="${CARGO_TARGET_DIR:-$SKIFF_ROOT/target}/release/skiff"
fi
command -v curl >/dev/null || { echo "curl is required" >&2; exit 1; }

dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
api="http://127.0.0.1:$port"
cat >"$dir/skiff.toml" <<EOF
[cluster]
data_dir = "$dir/data"
[gateway]
listen = "127.0.0.1:$port"
insecure_http = true
EOF
for i in 1 2 3; do
    cat >>"$dir/skiff.toml" <<EOF
[[nodes]]
name = "node-$i"
runtime = "$runtime"
pods = 400
address = "127.0.0.$i"
EOF
done

SKIFF_LOG=warn "$bin" up --config "$dir/skiff.toml" >"$dir/log" 2>&1 &
pid=$!
# The Docker nodes' pod networks go too (the kubelets make them; skiff leaves them, as a
# network plugin leaves its bridge).
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"; [ "$runtime" = docker ] && for i in 1 2 3; do docker network rm "skiff-node-$i" >/dev/null 2>&1; done' EXIT

rss() { awk '/^VmRSS:/ {printf "%.1f MiB", $2 / 1024}' "/proc/$pid/status"; }
# Wait (with a deadline) until `$1` prints at least `$2`.
wait_for() {
    local what="$1" want="$2" deadline=$((SECONDS + 600)) n
    while :; do
        n="$(eval "$what" 2>/dev/null || echo 0)"
        [ "${n:-0}" -ge "$want" ] && return 0
        [ "$SECONDS" -lt "$deadline" ] || { echo "timed out: $what = $n, want $want" >&2; exit 1; }
        sleep 0.5
    done
}
count() { curl -sf "$api$1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))'; }

wait_for "count /api/v1/nodes" 3
sleep 10
echo "idle, 3 $runtime nodes: $(rss)"
[ "$runtime" = sim ] || exit 0

curl -sf -o /dev/null -H 'Content-Type: application/json' "$api/api/v1/namespaces/default/replicationcontrollers" -d "{
  \"apiVersion\": \"v1\", \"kind\": \"ReplicationController\", \"metadata\": {\"name\": \"many\"},
  \"spec\": {\"replicas\": $pods, \"selector\": {\"app\": \"many\"}, \"template\": {
    \"metadata\": {\"labels\": {\"app\": \"many\"}},
    \"spec\": {\"containers\": [{\"name\": \"app\", \"image\": \"busybox:1.36\"}]}}}}"
started=$SECONDS
wait_for "count '/api/v1/namespaces/default/pods?fieldSelector=status.phase%3DRunning'" "$pods"
echo "$pods pods Running after $((SECONDS - started)) s"
sleep 10
echo "$pods simulated pods on 3 hollow nodes: $(rss)"
