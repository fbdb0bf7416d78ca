#!/usr/bin/env bash
# Failover of the scheduler between two servers on one etcd: two `skiff up` processes
# (each with a hollow node) share a one-member etcd; the server holding the kube-scheduler
# Lease is killed (SIGKILL), a pod is created through the other, and the time from the kill
# to that pod being bound is measured. The killed server is started again (it follows) and
# the next round kills whichever leads. Prints each round, p50 and max.
#   ROUNDS (5)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/build-env.sh"
rounds="${ROUNDS:-5}"

cargo build --release --bin skiff
bin="${CARGO_TARGET_DIR:-$SKIFF_ROOT/target}/release/skiff"

work="$(mktemp -d)"
declare -A pid url
cleanup() {
    for s in a b; do
        [ -n "${pid[$s]:-}" ] && { kill -9 "${pid[$s]}" 2>/dev/null || true; }
    done
    [ -n "${etcd_pid:-}" ] && { kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; }
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)" peer="$(free_port)"
etcd --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$port" \
    --advertise-client-urls "http://127.0.0.1:$port" --listen-peer-urls "http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer" --initial-cluster "default=http://127.0.0.1:$peer" \
    > "$work/etcd.log" 2>&1 &
etcd_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done

start() {
    local s="$1"
    mkdir -p "$work/$s"
    cat > "$work/$s.toml" <<TOML
[gateway]
listen = "127.0.0.1:0"
[store]
datastore_endpoint = "http://127.0.0.1:$port"
[proxy]
cluster_ip = "none"
[network]
cluster_cidr = ""
[dns]
enabled = false
[[nodes]]
name = "node-$s"
runtime = "sim"
heartbeat_seconds = 1
server_port = 0
TOML
    : > "$work/$s.out"
    SKIFF_LOG=info "$bin" up --insecure-http --config "$work/$s.toml" --data-dir "$work/$s" \
        > "$work/$s.out" 2>> "$work/$s.log" &
    pid[$s]=$!
    for _ in $(seq 1 300); do grep -q "ready at" "$work/$s.out" 2>/dev/null && break; sleep 0.1; done
    url[$s]="$(sed -n 's/.*ready at \(http:[^ ]*\).*/\1/p' "$work/$s.out" | head -1)"
    [ -n "${url[$s]}" ] || { tail -20 "$work/$s.log" >&2; echo "server $s did not start" >&2; exit 1; }
}
identity() {
    sed 's/\x1b\[[0-9;]*m//g' "$work/$1.log" \
        | sed -n 's/.*leader election on.*identity=\([^ ]*\).*/\1/p' | tail -1
}
holder() {
    curl -sf "${url[$1]}/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["spec"]["holderIdentity"])' 2>/dev/null || true
}
now_ms() { date +%s%3N; }

start a
for _ in $(seq 1 100); do [ -n "$(holder a)" ] && break; sleep 0.1; done
cp -r "$work/a/pki" "$work/b-pki"
mkdir -p "$work/b"; mv "$work/b-pki" "$work/b/pki"
start b

times=()
for r in $(seq 1 "$rounds"); do
    h="$(holder a)"; [ -n "$h" ] || h="$(holder b)"
    if [ "$h" = "$(identity a)" ]; then leader=a follower=b; else leader=b follower=a; fi
    kill -9 "${pid[$leader]}"; wait "${pid[$leader]}" 2>/dev/null || true
    killed="$(now_ms)"
    curl -sf -X POST -H 'Content-Type: application/json' \
        "${url[$follower]}/api/v1/namespaces/default/pods" \
        -d "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"failover-$r\"},\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"busybox\"}]}}" >/dev/null
    while :; do
        node="$(curl -sf "${url[$follower]}/api/v1/namespaces/default/pods/failover-$r" \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["spec"].get("nodeName",""))' 2>/dev/null || true)"
        [ -n "$node" ] && break
        [ $(( $(now_ms) - killed )) -lt 120000 ] || { echo "round $r: no bind in 120 s" >&2; exit 1; }
        sleep 0.1
    done
    took=$(( $(now_ms) - killed ))
    times+=("$took")
    echo "round $r: killed $leader, pod bound to $node by $follower after ${took} ms"
    start "$leader"
done
sorted=($(printf '%s\n' "${times[@]}" | sort -n))
echo "failover (leader killed -> first pod bound by the new leader), lease 15 s, retry 2 s:"
echo "  p50 ${sorted[$(( ${#sorted[@]} / 2 ))]} ms, max ${sorted[-1]} ms over ${#sorted[@]} kills"
