#!/usr/bin/env bash
# Fetches what a guest boots, for each Debian architecture named (arm64, armhf):
#
#   tests/vm/fetch.sh arm64 [armhf]
#
# Debian 12's current kernel (the package linux-image-arm64 or linux-image-armmp depends
# on, modules included) and busybox-static; for armhf also libc6 and libgcc-s1, which the
# armv7 agent (glibc, dynamically linked) loads. Packages come through a private apt state
# in the cache (no `dpkg --add-architecture`, the machine's apt configuration is untouched).
# Unpacked into $VM_CACHE/ARCH/{kernel,rootfs}; a package already there is not fetched
# again, and with no registry reachable a cached kernel is used as it is.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/vm/lib.sh
. "$here/lib.sh"

[ $# -ge 1 ] || vm_die "usage: tests/vm/fetch.sh arm64|armhf ..."
vm_require apt-get apt
vm_require dpkg-deb dpkg
vm_require depmod kmod

fetch_arch() {
  vm_select_arch "$1" || exit 2
  local state=$VM_DIR/apt debs=$VM_DIR/debs
  mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$debs"
  local apt=(-o "APT::Architecture=$VM_ARCH" -o "APT::Architectures=$VM_ARCH"
    -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache"
    -o "Dir::State::status=/dev/null" -o "Debug::NoLocking=1")
  if ! apt-get "${apt[@]}" -qq update 2>"$state/update.err"; then
    if [ -s "$VM_DIR/kernel.package" ]; then
      vm_log "$VM_ARCH: apt-get update failed ($(tail -n 1 "$state/update.err")); using the cached $(cat "$VM_DIR/kernel.package")"
      return 0
    fi
    vm_die "$VM_ARCH: apt-get update failed and nothing is cached: $(cat "$state/update.err")"
  fi
  # The meta package depends on the versioned one (linux-image-6.1.0-N-arm64).
  local kpkg
  kpkg=$(apt-cache "${apt[@]}" depends "$VM_KERNEL_META" |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
  [ -n "$kpkg" ] || vm_die "$VM_ARCH: no kernel package behind $VM_KERNEL_META in Debian's index"
  local pkgs=("$kpkg" busybox-static)
  [ "$VM_ARCH" = armhf ] && pkgs+=(libc6 libgcc-s1)

  # Download only the .debs not already in the cache (their file names carry the version).
  local uris name changed=0
  uris=$(cd "$debs" && apt-get "${apt[@]}" --print-uris download "${pkgs[@]}") ||
    vm_die "$VM_ARCH: apt-get cannot locate ${pkgs[*]}"
  while read -r _ name _; do
    [ -e "$debs/$name" ] || changed=1
  done <<<"$uris"
  if [ "$changed" = 1 ] || [ "$(cat "$VM_DIR/kernel.package" 2>/dev/null)" != "$kpkg" ]; then
    rm -f "$debs"/*.deb
    (cd "$debs" && apt-get "${apt[@]}" -qq download "${pkgs[@]}") 2>&1 |
      { grep -v 'Download is performed unsandboxed' || true; }
    rm -rf "$VM_DIR/kernel" "$VM_DIR/rootfs"
    mkdir -p "$VM_DIR/kernel" "$VM_DIR/rootfs"
    dpkg-deb -x "$debs/${kpkg}"_*.deb "$VM_DIR/kernel" ||
      vm_die "$VM_ARCH: cannot unpack $kpkg from $debs"
    local deb
    for deb in "$debs"/*.deb; do
      case ${deb##*/} in linux-image-*) ;; *) dpkg-deb -x "$deb" "$VM_DIR/rootfs" ;; esac
    done
    local release
    release=$(vm_kernel_release)
    depmod -b "$VM_DIR/kernel" "$release"
    echo "$kpkg" >"$VM_DIR/kernel.package"
    vm_log "$VM_ARCH: fetched $kpkg (kernel $release) and ${pkgs[*]:1}"
  else
    vm_log "$VM_ARCH: $kpkg (kernel $(vm_kernel_release)) is cached in $VM_DIR"
  fi
}

for arch in "$@"; do fetch_arch "$arch"; done
