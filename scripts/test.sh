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
