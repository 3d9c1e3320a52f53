#!/usr/bin/env bash
# Downloads Debian's generic amd64 kernels of three suites into
# target/kernel-matrix/<suite>/ and installs their modules under
# /usr/lib/modules/<version> (+ depmod), for boot-kernels.sh.
#
# The system's apt sources are not changed: a private sources list names the
# suites, with private lists and cache directories under target/. Reruns reuse
# what was downloaded (the extracted tree is kept), so only the first run
# reaches the archive.
#   5.10 = bullseye (Debian 11), 6.1 = bookworm (Debian 12), 6.12 = trixie (Debian 13)
set -euo pipefail
cd "$(dirname "$0")/../.."
SUITES=${FLOWLENS_MATRIX_SUITES:-"bullseye bookworm trixie"}
top=$PWD/target/kernel-matrix
apt_dir=$top/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"

# The archive URI this machine's apt already uses (deb822 or one-line format).
uri=$(grep -hoE '^URIs: *[^ ]+/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}' || true)
if [ -z "$uri" ]; then
	uri=$(grep -hoE '^deb +(\[[^]]*\] +)?[^ ]+/debian/? ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk '{print $NF}' | head -1 || true)
fi
uri=${uri:-http://deb.debian.org/debian}
: >"$apt_dir/sources.list"
for s in $SUITES; do
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $s main" >>"$apt_dir/sources.list"
done
APT=(-o Dir::Etc::sourcelist="$apt_dir/sources.list" -o Dir::Etc::sourceparts=/dev/null
	-o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache"
	-o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Get::List-Cleanup=0
	-o APT::Sandbox::User=root)

need_update=0
for s in $SUITES; do
	[ -s "$top/$s/release" ] || need_update=1
done
if [ $need_update = 1 ]; then
	apt-get "${APT[@]}" update -qq
fi
for s in $SUITES; do
	dir=$top/$s
	if [ ! -s "$dir/release" ]; then
		# linux-image-amd64 of that suite depends on the versioned generic image.
		pkg=$(apt-cache "${APT[@]}" show "linux-image-amd64/$s" 2>/dev/null |
			sed -n 's/^Depends: *\(linux-image-[^ ,]*-amd64\)\b.*/\1/p' | head -1)
		[ -n "$pkg" ] || pkg=$(apt-cache "${APT[@]}" show -a linux-image-amd64 | awk -v s="$s" '
			/^Depends:/ {d=$2} /^Version:/ {v=$2} /^$/ {print d} ' | head -1)
		[ -n "$pkg" ] || { echo "no linux-image-amd64 in $s" >&2; exit 1; }
		pkg=${pkg%%,*}
		echo "kernel-matrix: $s -> $pkg"
		rm -rf "$dir"
		mkdir -p "$dir/deb" "$dir/root"
		(cd "$dir/deb" && apt-get "${APT[@]}" download -qq "$pkg/$s")
		dpkg-deb -x "$dir"/deb/*.deb "$dir/root"
		rm -rf "$dir/deb"
		ver=${pkg#linux-image-}
		echo "$ver" >"$dir/release"
	fi
	ver=$(cat "$dir/release")
	if [ ! -e "/usr/lib/modules/$ver/modules.dep" ]; then
		src=$dir/root/lib/modules/$ver
		[ -d "$src" ] || src=$dir/root/usr/lib/modules/$ver
		mkdir -p /usr/lib/modules
		cp -a "$src" "/usr/lib/modules/$ver"
		depmod "$ver"
	fi
	echo "kernel-matrix: $s $ver $dir/root/boot/vmlinuz-$ver"
done
