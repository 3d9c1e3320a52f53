#!/usr/bin/env bash
# Runs every flowlens test on a fresh Debian 12/13 or Ubuntu 24.04 machine: installs what the tests need
# (scripts/lib/deps.sh), then cargo fmt --check, clippy -D warnings, the unit and golden tests, the kernel
# and end-to-end tests (root: network namespaces, cgroups, real Docker, real InfluxDB, tshark on tcpdump's
# captures, Grafana dashboards, the compose stack and the deploy units), and the benchmarks' smoke run.
#
#   scripts/test-all.sh            # as your user: it asks sudo for what needs root
#   scripts/test-all.sh --no-install  # skip the installation step
#
# .ci/run calls this and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

# The kernel and end-to-end tests need root: run the whole script as root, with the caller's Rust.
if [ "$(id -u)" != 0 ]; then
	echo "==> Re-running as root (sudo) with this user's Rust toolchain"
	exec sudo env "PATH=$PATH" "CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}" "RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}" \
		"FLOWLENS_OWNER=$(id -u):$(id -g)" "$0" "$@"
fi
if [ -n "${FLOWLENS_OWNER:-}" ]; then
	# Builds as root leave root-owned files: give target/ back to the caller at the end.
	trap 'chown -R "$FLOWLENS_OWNER" target 2>/dev/null || true' EXIT
fi

INSTALL=1
[ "${1:-}" = --no-install ] && INSTALL=""

. scripts/lib/deps.sh
detect_distro
ensure_rust
if [ -n "$INSTALL" ]; then
	ensure_packages "Build (clang, libbpf)" "${DEPS_BUILD[@]}"
	ensure_packages "Tests (namespaces, traffic, Docker, tshark, ...)" "${DEPS_TEST[@]}"
	ensure_influxdb
	ensure_chromium
	ensure_kubernetes_validate
	ensure_tcpdump_captures
	ensure_packages "Kernel matrix (qemu)" "${DEPS_KERNEL_MATRIX[@]}"
fi

step() { echo "==> $*"; }
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests run the release binary: the one users run (a debug build's correlator is ~10x slower
# and cannot keep up with e2e_churn's ~8k connections/s on 2 cores). The kernel matrix and the benchmarks
# use the same build. Unit tests keep debug assertions.
step "Build the release binary (the end-to-end tests run it)"
cargo build --release --workspace --bins
export FLOWLENS_BIN="$PWD/target/release/flowlens"
step "Unit and golden tests"
cargo test --no-fail-fast --workspace --exclude flowlens-tests
# Kernel and end-to-end tests share interfaces and system-wide hooks: one at a time.
step "Kernel and end-to-end tests (root, one at a time)"
# --no-fail-fast: one failing file does not hide the others' results (the step still fails).
cargo test --no-fail-fast -p flowlens-tests -- --test-threads=1
# Debian's 5.10, 6.1 and 6.12 kernels under qemu (TCG): doctor, golden, socket-hook and end-to-end
# subsets in each (downloads cached under target/kernel-matrix). FLOWLENS_KERNEL_MATRIX=0 skips it.
if [ "${FLOWLENS_KERNEL_MATRIX:-1}" != 0 ]; then
	step "Kernel matrix: 5.10, 6.1, 6.12 under qemu"
	tests/kernel-matrix/run.sh
fi
# Benchmarks report, they don't gate; this only checks that every one still runs.
step "Benchmarks, smoke run"
bench/run-all.sh --smoke
step "All tests passed"
