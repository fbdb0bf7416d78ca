#!/usr/bin/env bash
# Streams through the node server, side by side in one run against the same pod:
#  - port-forward: a 1 GiB transfer through `kubectl port-forward` (kubectl -> API server
#    -> node server -> the pod's port) against the same transfer straight to the pod's IP;
#  - exec: `kubectl exec -- true` round trips against `docker exec` of the same container
#    (p50 and p90 of N each, interleaved).
# Usage: scripts/bench-streams.sh [execs]
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/build-env.sh"
runs="${1:-30}"

cargo build --release --bin skiff
bin="${CARGO_TARGET_DIR:-$SKIFF_ROOT/target}/release/skiff"
"$bin" images >/dev/null

work="$(mktemp -d)"
cleanup() {
    kill "${pf:-0}" 2>/dev/null || true
    kill "${pid:-0}" 2>/dev/null || true
    wait "${pid:-0}" 2>/dev/null || true
    docker ps -aq --filter label=io.skiff.node=bench-streams | xargs -r docker rm -f >/dev/null
    docker network rm skiff-bench-streams >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/skiff.toml" <<TOML
[gateway]
listen = "127.0.0.1:0"
[proxy]
cluster_ip = "none"
[[nodes]]
name = "bench-streams"
server_port = 0
TOML
"$bin" up --config "$work/skiff.toml" --data-dir "$work/data" > "$work/out" 2> "$work/log" &
pid=$!
for _ in $(seq 1 100); do grep -q "ready at" "$work/out" 2>/dev/null && break; sleep 0.1; done
export KUBECONFIG="$work/data/kubeconfig"
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: source}
spec:
  containers:
  - name: main
    image: skiff/busybox:latest
    # Every connection to 9000 gets 1 GiB of zeros.
    command: ["sh", "-c", "nc -ll -p 9000 -e sh -c 'dd if=/dev/zero bs=1048576 count=1024 2>/dev/null'"]
YAML
kubectl wait --for=condition=Ready pod/source --timeout=120s >/dev/null
ip="$(kubectl get pod source -o jsonpath='{.status.podIP}')"
cid="$(docker ps -q --filter label=io.skiff.node=bench-streams --filter label=io.skiff.container.name=main)"

kubectl port-forward pod/source :9000 > "$work/pf" 2>&1 &
pf=$!
for _ in $(seq 1 100); do grep -q "Forwarding from 127.0.0.1" "$work/pf" 2>/dev/null && break; sleep 0.1; done
port="$(sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\) .*/\1/p' "$work/pf" | head -1)"

python3 - "$ip" "$port" "$cid" "$runs" "$pf" <<'PY'
import os, socket, statistics, subprocess, sys, time
ip, port, cid, runs, pf_pid = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]

def transfer(host, port):
    s = socket.create_connection((host, port))
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    total, start = 0, time.monotonic()
    while True:
        n = s.recv_into(view)
        if n == 0:
            break
        total += n
    took = time.monotonic() - start
    s.close()
    assert total == 1 << 30, f"got {total} bytes"
    return total / took / (1 << 20)

def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

direct, through, client = [], [], []
for _ in range(3):
    direct.append(transfer(ip, 9000))
    before, start = cpu_seconds(pf_pid), time.monotonic()
    through.append(transfer("127.0.0.1", port))
    client.append((cpu_seconds(pf_pid) - before) / (time.monotonic() - start))
d, t = statistics.median(direct), statistics.median(through)
print(f"port-forward 1 GiB: direct {d:.0f} MiB/s, through skiff {t:.0f} MiB/s ({t / d:.2f}x); "
      f"kubectl port-forward itself busy {statistics.median(client) * 100:.0f}% of a core")

def timed(cmd):
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.monotonic() - start) * 1000

# `kubectl get pod` is the same client's start-up plus one request: what exec costs on
# top of it is the stream through the API server and the node server.
k, dk, kg = [], [], []
for _ in range(runs):
    k.append(timed(["kubectl", "exec", "source", "--", "true"]))
    dk.append(timed(["docker", "exec", cid, "true"]))
    kg.append(timed(["kubectl", "get", "pod", "source"]))
def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]
print(f"exec round trip ({runs} each): kubectl exec p50 {q(k, .5):.0f} ms p90 {q(k, .9):.0f} ms; "
      f"docker exec p50 {q(dk, .5):.0f} ms p90 {q(dk, .9):.0f} ms ({q(k, .5) / q(dk, .5):.2f}x at p50); "
      f"kubectl get pod p50 {q(kg, .5):.0f} ms")
PY
