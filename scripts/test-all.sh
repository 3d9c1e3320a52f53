#!/usr/bin/env bash
# Runs every flowlens test: unit, golden, kernel (BPF_PROG_TEST_RUN, real hooks)
# and end-to-end (network namespaces, cgroups, real Docker). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "error: the kernel and end-to-end tests need root: sudo $0" >&2
	exit 1
fi
# The end-to-end tests run the real binary.
cargo build --workspace --bins
# Unit and golden tests (no privileges needed, parallel).
cargo test --workspace --exclude flowlens-tests
# Kernel and end-to-end tests share interfaces and system-wide hooks: one at a time.
cargo test -p flowlens-tests -- --test-threads=1
