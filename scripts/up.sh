#!/usr/bin/env bash
# Bring a cluster up in this process (Ctrl-C stops it). Extra arguments go to `skiff up`,
# e.g. --config FILE --data-dir DIR.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/build-env.sh"

cargo build --release --bin skiff
exec "${CARGO_TARGET_DIR:-$SKIFF_ROOT/target}/release/skiff" up "$@"
