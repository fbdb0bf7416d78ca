#!/usr/bin/env bash
# Proxy benchmark: requests/s and latency through a NodePort (the node proxy, 3 httpd pods
# behind it) next to the same load sent straight to one pod IP, in the same run, with wrk.
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
    for n in 1 2 3; do docker ps -aq --filter "label=io.skiff.node=bench-proxy-$n" | xargs -r docker rm -f >/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/skiff.toml" <<TOML
[gateway]
listen = "127.0.0.1:0"
[[nodes]]
name = "bench-proxy-1"
[[nodes]]
name = "bench-proxy-2"
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
# Every request is a new connection (busybox httpd closes them). Through the proxy, the
# proxy closes the client's connection first (it passes on the backend's close), so each
# run leaves its connections in TIME_WAIT on this host for 60 s, holding ephemeral ports
# that the next run's connects then have to search past. Before every run, wait until
# those sockets have drained, so neither path is measured in the other's wake.
drain() {
    for _ in $(seq 1 90); do
        [ "$(ss -Htan state time-wait | wc -l)" -lt 500 ] && return
        sleep 1
    done
}
for conns in ${BENCH_CONNECTIONS:-8 32}; do
    for round in 1 2; do
        drain
        echo "== $conns connections, round $round: through the node proxy (127.0.0.1:$port, 3 pods), 2 threads, 5 s"
        wrk -t2 -c"$conns" -d5s --latency "http://127.0.0.1:$port/" | grep -E "Requests/sec|99%|50%"
        drain
        echo "== $conns connections, round $round: direct to one pod ($ip:8080), 2 threads, 5 s"
        wrk -t2 -c"$conns" -d5s --latency "http://$ip:8080/" | grep -E "Requests/sec|99%|50%"
    done
done
