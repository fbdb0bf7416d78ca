#!/usr/bin/env bash
# Run the whole test suite on this machine, installing what it lacks first.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/build-env.sh"

command -v kubectl >/dev/null 2>&1 || echo "note: kubectl not found; the kubectl test will be skipped" >&2

# The crash test drives the real `skiff` binary, so build every target first.
cargo build --workspace --all-targets
cargo test --workspace "$@"
