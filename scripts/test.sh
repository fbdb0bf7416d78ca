#!/usr/bin/env bash
# Run the whole test suite on this machine, installing what it lacks first.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/build-env.sh"

# The tests drive the machine's kubectl; without it they fail, so say so up front.
command -v kubectl >/dev/null 2>&1 || echo "warning: kubectl not found; the kubectl tests will fail" >&2

# The official Python client, which the OpenAPI/discovery tests drive too.
if ! python3 -c "import kubernetes" >/dev/null 2>&1; then
    echo "==> installing the Kubernetes Python client" >&2
    python3 -m pip install --quiet --break-system-packages kubernetes >/dev/null 2>&1 \
        || python3 -m pip install --quiet kubernetes >/dev/null \
        || { echo "could not install the Kubernetes Python client (pip install kubernetes)" >&2; exit 1; }
fi

# Debian's kubectl 1.20 (SPDY only) for the exec and port-forward tests of older clients,
# unpacked beside the cache: installed, its package would replace the machine's kubectl.
OLD_KUBECTL_DIR="${SKIFF_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff}/kubectl-1.20"
if [ ! -x "$OLD_KUBECTL_DIR/kubectl" ]; then
    echo "==> fetching Debian's kubernetes-client (kubectl 1.20)" >&2
    tmp="$(mktemp -d)"
    (cd "$tmp" && apt-get download kubernetes-client >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get download kubernetes-client >/dev/null; }) \
        || { echo "could not download Debian's kubernetes-client" >&2; exit 1; }
    dpkg -x "$tmp"/kubernetes-client_*.deb "$tmp/x"
    mkdir -p "$OLD_KUBECTL_DIR"
    cp "$tmp/x/usr/bin/kubectl" "$OLD_KUBECTL_DIR/kubectl"
    rm -rf "$tmp"
fi
export SKIFF_OLD_KUBECTL="$OLD_KUBECTL_DIR/kubectl"

# Pods run on the local Docker Engine: make sure it is up.
if ! docker info >/dev/null 2>&1; then
    echo "==> starting the Docker Engine" >&2
    (service docker start || (nohup dockerd >/var/log/dockerd.log 2>&1 &)) >/dev/null 2>&1 || true
    for _ in $(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi

# The crash test drives the real `skiff` binary, so build every target first.
cargo build --workspace --all-targets

# The images pods run (no registry is reachable): pause, and busybox for the tests.
"${CARGO_TARGET_DIR:-$SKIFF_ROOT/target}/debug/skiff" images
cargo test --workspace "$@"

# The API and controller suites again with the objects in etcd (Debian's etcd-server, one
# member on loopback; each test cluster under a key prefix of its own). Only for the whole
# suite: a run narrowed by arguments is the caller's choice of tests.
if [ "$#" -eq 0 ]; then
    etcd_dir="$(mktemp -d)"
    etcd_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    peer_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    etcd --data-dir "$etcd_dir/data" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "default=http://127.0.0.1:$peer_port" > "$etcd_dir/etcd.log" 2>&1 &
    etcd_pid=$!
    trap 'kill "$etcd_pid" 2>/dev/null; rm -rf "$etcd_dir"' EXIT
    for _ in $(seq 1 50); do
        curl -fsS "http://127.0.0.1:$etcd_port/health" >/dev/null 2>&1 && break
        sleep 0.2
    done
    echo "==> the API and controller suites on etcd (127.0.0.1:$etcd_port)" >&2
    SKIFF_TEST_DATASTORE="http://127.0.0.1:$etcd_port" cargo test -p skiff-integration \
        --test api --test machinery --test controllers --test replication --test scheduler \
        --test informers
fi
