# What flowlens needs on a machine, by purpose; sourced by scripts/run.sh and scripts/test-all.sh.
#
# Supported: Debian 12 (bookworm), Debian 13 (trixie), Ubuntu 24.04 (noble), with git, curl, sudo and
# rustup's cargo already there. Everything is installed only when missing, so running it again is quick
# and quiet. Run end to end on Debian 12 only; the package names were checked against the Debian 13 and
# Ubuntu 24.04 archives (Ubuntu: clang-19 is in noble-updates, bpftool in linux-tools-*, Chromium a snap).
#
# To add a need: put the package in the list of the step that needs it below (DEPS_<step>), with a
# comment saying which test or tool uses it; where a distribution names it differently, add a case to
# pkg_name. Something that is not a Debian/Ubuntu package gets its own ensure_* function, called from
# the script that needs it.

# --- the lists ---------------------------------------------------------------------------------------

# Building: the BPF programs (clang ≥ 16, libbpf headers); the Rust code needs nothing else.
DEPS_BUILD=(clang-19 llvm-19 libbpf-dev pkg-config ca-certificates)

# Kernel and end-to-end tests (tests/): namespaces, traffic, references.
DEPS_TEST=(
	libelf-dev zlib1g-dev bpftool          # collector-ebpf tests, bpftool: attachment checks (tests/src)
	iproute2 ethtool iputils-ping procps   # netns/veth harness
	netcat-openbsd socat iperf3            # traffic generators
	util-linux                             # setpriv (processes as other users)
	libcap2-bin                            # setcap/getcap: e2e_privileges (the README's capability route)
	python3 python3-yaml python3-venv      # traffic agents; compose/k8s YAML; the kubernetes-validate venv
	tcpdump                                # reference capture
	busybox-static                         # test container images (docker import)
	docker.io docker-compose debootstrap   # e2e_docker, compose_stack (private dockerd, local base image)
	systemd                                # systemd-analyze verify/security (deploy_units)
	dpkg-dev                               # apt-get source tcpdump (its test captures)
	tshark python3-dpkt                    # replay_reference: tshark as the reference, dpkt's captures
	conntrack iptables nftables            # NAT scenarios (e2e_nat: own nftables NAT; e2e_docker_nat: Docker's iptables NAT)
	dnsmasq-base                           # e2e_signals, e2e_signals_delay: a real DNS server (iptables: their drop/reject rules)
)

# Browser tests (web explorer pages): headless Chromium + chromedriver.
DEPS_BROWSER=(chromium chromium-driver)

# Kernel matrix under qemu (TCG); virtme-ng comes from PyPI in a venv (tests/kernel-matrix/run.sh makes it);
# udev: virtme-ng's guest finds its I/O ports through it (without it the guest loses its output and exit code).
DEPS_KERNEL_MATRIX=(qemu-system-x86 kmod udev python3-venv)

# --- distributions -----------------------------------------------------------------------------------

# Sets DISTRO (debian12, debian13, ubuntu24.04) or says why not and returns 1.
detect_distro() {
	local id="" version=""
	if [ -r /etc/os-release ]; then
		id=$(. /etc/os-release && echo "${ID:-}")
		version=$(. /etc/os-release && echo "${VERSION_ID:-}")
	fi
	case "$id:$version" in
	debian:12) DISTRO=debian12 ;;
	debian:13) DISTRO=debian13 ;;
	ubuntu:24.04) DISTRO=ubuntu24.04 ;;
	*)
		echo "error: unsupported distribution '${id:-unknown} ${version:-}': flowlens's scripts support Debian 12, Debian 13 and Ubuntu 24.04." >&2
		echo "       Elsewhere install the equivalents of the lists in scripts/lib/deps.sh by hand." >&2
		return 1
		;;
	esac
	echo "==> Distribution: $DISTRO"
}

# The package name on this distribution (empty: nothing to install, the need is met otherwise).
pkg_name() {
	case "$DISTRO:$1" in
	ubuntu24.04:bpftool) echo "linux-tools-common linux-tools-generic" ;;
	ubuntu24.04:chromium | ubuntu24.04:chromium-driver) echo "" ;; # a snap on Ubuntu: ensure_chromium
	*) echo "$1" ;;
	esac
}

# --- installing --------------------------------------------------------------------------------------

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes
APT_UPDATED=""

apt_update_once() {
	if [ -z "$APT_UPDATED" ]; then
		echo "    apt-get update"
		$SUDO apt-get update -qq
		APT_UPDATED=1
	fi
}

# Installs the packages of a list that are not installed yet; says what it does.
# Usage: ensure_packages "what for" pkg...
ensure_packages() {
	local what=$1
	shift
	local p n missing=()
	for p in "$@"; do
		for n in $(pkg_name "$p"); do
			dpkg-query -W -f='${Status}' "$n" 2>/dev/null | grep -q "ok installed" || missing+=("$n")
		done
	done
	if [ ${#missing[@]} = 0 ]; then
		echo "==> $what: already installed"
		return 0
	fi
	echo "==> $what: installing ${missing[*]}"
	apt_update_once
	# tshark asks whether non-root users may capture: no.
	echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
	$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# InfluxDB 1.x server (/usr/bin/influxd) for the InfluxDB tests. Debian 12 (1.6.7~rc0-1), Debian 13
# (1.6.7~rc0-2) and Ubuntu 24.04 (1.6.7~rc0-2build1, universe) all ship `influxdb` (their archives' package
# lists, checked 2026-12-02); where a release has none, InfluxData's own apt repository provides the 1.x
# package (not reachable from the machine this was written on: that path is untested).
ensure_influxdb() {
	if [ -x /usr/bin/influxd ]; then
		echo "==> InfluxDB (influxd): already installed"
		return 0
	fi
	apt_update_once
	if [ -n "$(apt-cache policy influxdb 2>/dev/null | awk '/Candidate:/ && $2 != "(none)" {print $2}')" ]; then
		echo "==> InfluxDB: installing the distribution's influxdb package"
		$SUDO apt-get install -y -qq --no-install-recommends influxdb >/dev/null
	else
		echo "==> InfluxDB: $DISTRO has no influxdb package; adding InfluxData's apt repository (stable, 1.x)"
		local key=/usr/share/keyrings/influxdata-archive.gpg
		curl -fsSL https://repos.influxdata.com/influxdata-archive.key |
			gpg --dearmor | $SUDO tee "$key" >/dev/null
		echo "deb [signed-by=$key] https://repos.influxdata.com/debian stable main" |
			$SUDO tee /etc/apt/sources.list.d/influxdata.list >/dev/null
		$SUDO apt-get update -qq
		$SUDO apt-get install -y -qq --no-install-recommends influxdb >/dev/null
	fi
	# The tests start their own influxd on free ports; a system service on :8086 is not wanted.
	if [ -d /run/systemd/system ]; then
		$SUDO systemctl disable --now influxdb >/dev/null 2>&1 || true
	fi
	[ -x /usr/bin/influxd ] || { echo "error: /usr/bin/influxd still missing after installing InfluxDB" >&2; return 1; }
}

# Chromium + chromedriver: Debian packages; on Ubuntu 24.04 only the snap exists.
ensure_chromium() {
	ensure_packages "Browser tests (Chromium)" "${DEPS_BROWSER[@]}"
	if [ "$DISTRO" = ubuntu24.04 ] && ! command -v chromedriver >/dev/null; then
		if command -v snap >/dev/null; then
			echo "==> Browser tests: snap install chromium (Ubuntu ships Chromium only as a snap)"
			$SUDO snap install chromium >/dev/null
		else
			echo "error: Ubuntu 24.04 ships Chromium only as a snap, and snap is not available here" >&2
			return 1
		fi
	fi
}

# cargo from rustup, with rustfmt and clippy.
ensure_rust() {
	if ! command -v cargo >/dev/null; then
		echo "error: cargo not found: install Rust with rustup (https://rustup.rs) and open a new shell" >&2
		return 1
	fi
	if command -v rustup >/dev/null; then
		local c
		for c in rustfmt clippy; do
			rustup component list --installed 2>/dev/null | grep -q "^$c" || {
				echo "==> Rust: rustup component add $c"
				rustup component add "$c" >/dev/null 2>&1
			}
		done
	fi
	echo "==> Rust: $(cargo --version)"
}

# kubernetes-validate (PyPI) in a venv under target/, for deploy_units.
ensure_kubernetes_validate() {
	local venv=target/venv-deploy
	if [ -x "$venv/bin/kubernetes-validate" ]; then
		echo "==> kubernetes-validate: already installed ($venv)"
		return 0
	fi
	echo "==> kubernetes-validate: installing into $venv (pip)"
	/usr/bin/python3 -m venv "$venv"
	"$venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate
}

# tcpdump's test captures (apt-get source tcpdump; needs deb-src lines) in target/captures.
ensure_tcpdump_captures() {
	if ls -d target/captures/tcpdump-*/tests >/dev/null 2>&1; then
		echo "==> tcpdump test captures: already in target/captures"
		return 0
	fi
	echo "==> tcpdump test captures: apt-get source tcpdump"
	if ! apt-get indextargets --format '$(TARGET_OF)' 2>/dev/null | grep -q deb-src; then
		local f added=""
		for f in /etc/apt/sources.list.d/*.sources; do
			[ -f "$f" ] || continue
			grep -q '^Types: deb$' "$f" || continue
			sed 's/^Types: deb$/Types: deb-src/' "$f" | $SUDO tee "/etc/apt/sources.list.d/flowlens-src-$(basename "$f")" >/dev/null
			added=1
		done
		if [ -z "$added" ] && [ -f /etc/apt/sources.list ]; then
			grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' |
				$SUDO tee /etc/apt/sources.list.d/flowlens-src.list >/dev/null
		fi
		$SUDO apt-get update -qq
		APT_UPDATED=1
	fi
	mkdir -p target/captures
	(cd target/captures && apt-get source -qq tcpdump >/dev/null 2>&1)
	ls -d target/captures/tcpdump-*/tests >/dev/null
}
