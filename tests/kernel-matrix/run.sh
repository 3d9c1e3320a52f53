#!/usr/bin/env bash
# The kernel matrix: boots Debian's 5.10 (bullseye), 6.1 (bookworm) and 6.12
# (trixie) kernels under qemu (TCG, virtme-ng, this machine's root file
# system) and runs tests/kernel-matrix/guest.sh in each, one boot per kernel.
# Needs root. Downloads are cached under target/kernel-matrix (reruns reach
# no network). Logs: target/kernel-matrix/out/<suite>.log, per-step logs under
# target/tmp/kernel-matrix/<suite>/.
#   tests/kernel-matrix/run.sh [suite ...]     (default: bullseye bookworm trixie)
#   FLOWLENS_MATRIX_STEPS="doctor flow_prog sock_prog e2e bench" (the default)
#   picks the steps; signals_prog, signals_e2e and signals_delay ("signals": all three) only when
#   named (see guest.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
	echo "error: the kernel matrix needs root: sudo $0" >&2
	exit 1
fi
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(bullseye bookworm trixie)
top=$PWD/target/kernel-matrix
FLOWLENS_MATRIX_SUITES="${suites[*]}" tests/kernel-matrix/fetch-kernels.sh
if [ ! -x "$top/venv/bin/vng" ]; then
	rm -rf "$top/venv"
	/usr/bin/python3 -m venv "$top/venv"
	"$top/venv/bin/pip" install -q virtme-ng
fi
export PATH=$top/venv/bin:$PATH

# What the guests run, built here (the guests' view of target/ is read-only).
cargo build -q --release -p flowlens-collector -p flowlens-bench
bins=$top/test-binaries
cargo test -q -p flowlens-tests --no-run --message-format=json \
	--test flow_prog --test sock_prog --test signals_prog --test e2e_capture \
	--test e2e_signals --test e2e_signals_delay 2>/dev/null |
	/usr/bin/python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])' >"$bins"
mkdir -p "$top/out" target/tmp

failed=()
for s in "${suites[@]}"; do
	ver=$(cat "$top/$s/release")
	start=$SECONDS
	echo "kernel-matrix: booting $s ($ver)"
	set +e
	timeout 1500 vng --run "$top/$s/root/boot/vmlinuz-$ver" --disable-kvm --memory 2G --cpus 2 \
		--rwdir "$PWD/target/tmp" \
		--exec "FLOWLENS_MATRIX_STEPS='${FLOWLENS_MATRIX_STEPS:-doctor flow_prog sock_prog e2e bench}' tests/kernel-matrix/guest.sh $s $bins" </dev/null 2>&1 | tee "$top/out/$s.log"
	rc=${PIPESTATUS[0]}
	set -e
	echo "kernel-matrix: $s ($ver) exit $rc after $((SECONDS - start)) s"
	[ "$rc" = 0 ] || failed+=("$s")
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "kernel-matrix: FAILED on ${failed[*]}"
	exit 1
fi
echo "kernel-matrix: all kernels passed (${suites[*]})"
