#!/usr/bin/env bash
# Builds flowlens and runs it on its embedded default, on a fresh Debian 12/13 or Ubuntu 24.04 machine:
# installs the build dependencies (clang, libbpf headers; scripts/lib/deps.sh), builds the release binary,
# checks the kernel (flowlens doctor) and runs `flowlens run` as root with the arguments given here.
#
#   scripts/run.sh                         # every interface; summary on the terminal (and the web explorer)
#   scripts/run.sh --jsonl flows.jsonl     # any `flowlens run` flags (flowlens run --help)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
detect_distro
ensure_rust
ensure_packages "Build (clang, libbpf)" "${DEPS_BUILD[@]}"
echo "==> Building the release binary (cargo build --release)"
cargo build --release -q -p flowlens-collector
echo "==> Checking this kernel (flowlens doctor)"
$SUDO ./target/release/flowlens doctor || echo "    (flowlens falls back to what this machine allows; see above)"
echo "==> Running: sudo ./target/release/flowlens run $* (Ctrl-C stops it and detaches everything)"
exec $SUDO ./target/release/flowlens run "$@"
