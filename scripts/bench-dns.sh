#!/usr/bin/env bash
# Cluster DNS benchmark: queries/s and latency of skiff's DNS answering Service names,
# next to a local dnsmasq answering the same names from its own records, in the same run,
# with dnsperf (UDP, 4 clients, 10 s each, two rounds alternating). Only loopback is asked.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/build-env.sh"
for tool in dnsperf dnsmasq; do
    command -v "$tool" >/dev/null 2>&1 || {
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsperf dnsmasq-base >/dev/null
    }
done

SERVICES="${BENCH_SERVICES:-100}"
cargo build --release --bin skiff
bin="${CARGO_TARGET_DIR:-$SKIFF_ROOT/target}/release/skiff"

work="$(mktemp -d)"
cleanup() {
    kill "${pid:-0}" "${dnsmasq_pid:-0}" 2>/dev/null || true
    wait "${pid:-0}" "${dnsmasq_pid:-0}" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
dns_port="$(free_port)"
cat > "$work/skiff.toml" <<TOML
[gateway]
listen = "127.0.0.1:0"
[dns]
listen = "127.0.0.1:$dns_port"
# Nothing leaves the machine: names outside the cluster are not part of the run.
upstream = ["127.0.0.1:9"]
TOML
"$bin" up --config "$work/skiff.toml" --data-dir "$work/data" > "$work/out" 2> "$work/log" &
pid=$!
for _ in $(seq 1 100); do grep -q "ready at" "$work/out" 2>/dev/null && break; sleep 0.1; done
export KUBECONFIG="$work/data/kubeconfig"
for i in $(seq 1 "$SERVICES"); do
    printf -- '---\napiVersion: v1\nkind: Service\nmetadata: {name: svc-%s}\nspec: {ports: [{port: 80}]}\n' "$i"
done > "$work/services.yaml"
kubectl apply -f "$work/services.yaml" >/dev/null

# The same names for dnsmasq, with the addresses skiff gave them.
kubectl get svc -o jsonpath='{range .items[*]}{.metadata.name} {.spec.clusterIP}{"\n"}{end}' \
    | grep '^svc-' > "$work/ips"
: > "$work/queries"
args=()
while read -r name ip; do
    echo "$name.default.svc.cluster.local A" >> "$work/queries"
    args+=("--host-record=$name.default.svc.cluster.local,$ip")
done < "$work/ips"
mq_port="$(free_port)"
dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces --listen-address=127.0.0.1 \
    --port="$mq_port" --pid-file= --user=root "${args[@]}" 2>/dev/null &
dnsmasq_pid=$!
# Both answer before the clock starts.
for port in "$dns_port" "$mq_port"; do
    for _ in $(seq 1 100); do
        dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries" -n 1 2>/dev/null | grep -q "Queries completed: *$SERVICES " && break
        sleep 0.2
    done
done

run() {
    local label="$1" port="$2"
    dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries" -c 4 -l 10 -q 100 -v > "$work/run" 2>&1 || true
    qps="$(grep 'Queries per second' "$work/run" | awk '{print $4}')"
    lost="$(grep 'Queries lost' "$work/run" | awk '{print $3}')"
    # Per-query latencies (seconds, last field of the verbose lines) to percentiles.
    grep -E '^> (NOERROR|NXDOMAIN|SERVFAIL)' "$work/run" | awk '{print $NF}' | sort -g > "$work/lat"
    n="$(wc -l < "$work/lat")"
    p50="$(awk -v n="$n" 'NR==int(n*0.50)+1{printf "%.3f", $1*1000}' "$work/lat")"
    p99="$(awk -v n="$n" 'NR==int(n*0.99)+1{printf "%.3f", $1*1000}' "$work/lat")"
    echo "$label: $qps queries/s, p50 $p50 ms, p99 $p99 ms, lost $lost"
}
for round in 1 2; do
    echo "== round $round, $SERVICES Service names, dnsperf -c 4 -l 10 -q 100 (UDP)"
    run "skiff DNS (127.0.0.1:$dns_port)" "$dns_port"
    run "dnsmasq   (127.0.0.1:$mq_port)" "$mq_port"
done
