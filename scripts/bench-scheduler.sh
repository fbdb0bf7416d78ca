#!/usr/bin/env bash
# The scheduler benchmark: 1,000 and then 5,000 simulated nodes, 10,000 pods each, pods
# scheduled per second (average and p99 of the per-second rate) and the scheduler's memory.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/build-env.sh"

cargo build --release --bin skiff
exec "${CARGO_TARGET_DIR:-$SKIFF_ROOT/target}/release/skiff" bench-scheduler --nodes 1000,5000 --pods 10000 "$@"
