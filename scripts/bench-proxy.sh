#!/usr/bin/env bash
# Proxy benchmark: requests/s and latency, with wrk, in the same run, over 3 httpd pods:
# through the ClusterIP from the host and from inside a pod (wrk run in a pod's network
# namespace), through the node port in the kernel (node 1 is at the host's Docker bridge
# address) and through the userspace proxy (node 2 at 127.0.0.2), and straight to one pod.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/build-env.sh"
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

cargo build --release --bin skiff
bin="${CARGO_TARGET_DIR:-$SKIFF_ROOT/target}/release/skiff"
"$bin" images >/dev/null

work="$(mktemp -d)"
cleanup() {
    kill "${pid:-0}" 2>/dev/null || true
    wait "${pid:-0}" 2>/dev/null || true
    ids="$(docker ps -aq --filter label=io.skiff.node=bench-proxy-1 --filter label=io.skiff.node=bench-proxy-2 --filter label=io.skiff.node=bench-proxy-3)"
    for n in 1 2 3; do
        docker ps -aq --filter "label=io.skiff.node=bench-proxy-$n" | xargs -r docker rm -f >/dev/null
        docker network rm "skiff-bench-proxy-$n" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/skiff.toml" <<TOML
[gateway]
listen = "127.0.0.1:0"
[[nodes]]
name = "bench-proxy-1"
address = "$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' | sed 's|0/16$|1|; s|0/24$|1|')"
[[nodes]]
name = "bench-proxy-2"
address = "127.0.0.2"
[[nodes]]
name = "bench-proxy-3"
TOML
"$bin" up --config "$work/skiff.toml" --data-dir "$work/data" > "$work/out" 2> "$work/log" &
pid=$!
for _ in $(seq 1 100); do grep -q "ready at" "$work/out" 2>/dev/null && break; sleep 0.1; done
export KUBECONFIG="$work/data/kubeconfig"
cat <<YAML | kubectl apply -f - >/dev/null
apiVersion: v1
kind: ReplicationController
metadata:
  name: bench
spec:
  replicas: 3
  selector: {app: bench}
  template:
    metadata:
      labels: {app: bench}
    spec:
      containers:
      - name: httpd
        image: skiff/busybox:latest
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
YAML
kubectl expose rc bench --port=80 --target-port=8080 --type=NodePort >/dev/null
for _ in $(seq 1 120); do
    n="$(kubectl get endpoints bench -o jsonpath='{.subsets[*].addresses[*].ip}' | wc -w)"
    [ "$n" = 3 ] && break; sleep 1
done
port="$(kubectl get svc bench -o jsonpath='{.spec.ports[0].nodePort}')"
ip="$(kubectl get endpoints bench -o jsonpath='{.subsets[0].addresses[0].ip}')"
cip="$(kubectl get svc bench -o jsonpath='{.spec.clusterIP}')"
node1="$(kubectl get node bench-proxy-1 -o jsonpath='{.status.addresses[0].address}')"
# A pod's network namespace (its pause container's), to run wrk from inside a pod.
for n in 1 2 3; do
    pause="$(docker ps -q --filter "label=io.skiff.node=bench-proxy-$n" --filter label=io.skiff.container.name=POD | head -1)"
    [ -n "$pause" ] && break
done
pod_pid="$(docker inspect -f '{{.State.Pid}}' "$pause")"
# Every request is a new connection (busybox httpd closes them). Through the proxy, the
# proxy closes the client's connection first (it passes on the backend's close), so each
# run leaves its connections in TIME_WAIT on this host for 60 s, holding ephemeral ports
# that the next run's connects then have to search past. Before every run, wait until
# those sockets have drained, so neither path is measured in the other's wake.
drain() {
    for _ in $(seq 1 90); do
        # The host's sockets and, after a run from inside the pod, the pod's.
        local host pod=0
        host="$(ss -Htan state time-wait | wc -l)"
        [ -n "${pod_pid:-}" ] && pod="$(nsenter -t "$pod_pid" -n ss -Htan state time-wait | wc -l)"
        [ "$host" -lt 500 ] && [ "$pod" -lt 500 ] && return
        sleep 1
    done
}
measure() {
    local label="$1"; shift
    drain
    echo "== $conns connections, round $round: $label, 2 threads, 5 s"
    "$@" | grep -E "Requests/sec|99%|50%"
}
for conns in ${BENCH_CONNECTIONS:-8 32}; do
    for round in 1 2; do
        measure "ClusterIP from the host ($cip:80, kernel)" wrk -t2 -c"$conns" -d5s --latency "http://$cip/"
        measure "ClusterIP from inside a pod ($cip:80, kernel)" nsenter -t "$pod_pid" -n wrk -t2 -c"$conns" -d5s --latency "http://$cip/"
        measure "node port in the kernel ($node1:$port)" wrk -t2 -c"$conns" -d5s --latency "http://$node1:$port/"
        measure "node port in userspace (127.0.0.2:$port)" wrk -t2 -c"$conns" -d5s --latency "http://127.0.0.2:$port/"
        measure "direct to one pod ($ip:8080)" wrk -t2 -c"$conns" -d5s --latency "http://$ip:8080/"
    done
done
