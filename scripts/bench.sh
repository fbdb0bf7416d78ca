#!/usr/bin/env bash
# The create benchmark: 10,000 pods through the HTTP API with 64 concurrent clients against
# a fresh in-process cluster on disk (every write durable). Extra arguments go to `skiff bench`.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/build-env.sh"

cargo build --release --bin skiff
exec "${CARGO_TARGET_DIR:-$SKIFF_ROOT/target}/release/skiff" bench --pods 10000 --concurrency 64 "$@"
