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
