#!/usr/bin/env bash
# Node benchmarks: pod startup latency (20 pods at once on one Docker node, next to the same
# containers started straight through the engine) and the memory of 1,000 hollow nodes.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/build-env.sh"

cargo build --release --bin skiff
bin="${CARGO_TARGET_DIR:-$SKIFF_ROOT/target}/release/skiff"
"$bin" images >/dev/null
"$bin" bench-startup --pods 20
"$bin" bench-hollow --nodes 1000
