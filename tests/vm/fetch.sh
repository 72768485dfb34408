#!/usr/bin/env bash
# Fetches what a guest boots, for each Debian architecture named (arm64, armhf):
#
#   tests/vm/fetch.sh arm64 [armhf]
#
# Debian 12's current kernel (the package linux-image-arm64 or linux-image-armmp depends
# on, modules included), busybox-static and VM_PACKAGES (lib.sh): nftables and the
# libraries `nft` loads (the agent's bridged app networks need it), for armhf also
# libgcc-s1, which the armv7 agent (glibc, dynamically linked) loads. Packages
# come through a private apt state in the cache (no `dpkg --add-architecture`, the
# machine's apt configuration is untouched). Unpacked into $VM_CACHE/ARCH/{kernel,rootfs};
# only the .debs not in the cache are downloaded (the kernel is unpacked again only when
# its own changed), and with no registry reachable the cache is used as it is.
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
  # A mirror in the middle of a sync serves an index that does not match its Release file
  # for a while ("File has unexpected size"): try again before giving up.
  local attempt=1 updated=0
  while :; do
    if apt-get "${apt[@]}" -qq update 2>"$state/update.err"; then
      updated=1
      break
    fi
    [ "$attempt" -lt 3 ] || break
    vm_log "$VM_ARCH: apt-get update failed ($(tail -n 1 "$state/update.err")); again in $((attempt * 15)) s"
    sleep $((attempt * 15))
    attempt=$((attempt + 1))
  done
  if [ "$updated" = 0 ]; then
    if [ -s "$VM_DIR/kernel.package" ]; then
      vm_log "$VM_ARCH: apt-get update failed ($(tail -n 1 "$state/update.err")); using the cached $(cat "$VM_DIR/kernel.package")"
      return 0
    fi
    # One index failing (bookworm-security mid-sync) leaves the others fetched: go on with
    # them while they still name a kernel.
    apt-cache "${apt[@]}" show "$VM_KERNEL_META" >/dev/null 2>&1 ||
      vm_die "$VM_ARCH: apt-get update failed and nothing is cached: $(cat "$state/update.err")"
    vm_log "$VM_ARCH: apt-get update failed for some indexes ($(head -n 1 "$state/update.err")); going on with those it fetched"
  fi
  # The meta package depends on the versioned one (linux-image-6.1.0-N-arm64).
  local kpkg
  kpkg=$(apt-cache "${apt[@]}" depends "$VM_KERNEL_META" |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
  [ -n "$kpkg" ] || vm_die "$VM_ARCH: no kernel package behind $VM_KERNEL_META in Debian's index"
  local pkgs=("$kpkg" busybox-static)
  # shellcheck disable=SC2206 # VM_PACKAGES is a list of names
  pkgs+=($VM_PACKAGES)

  # The .debs the index names now (their file names carry the version): those missing are
  # downloaded, those no longer named are dropped. Asked from a directory without .debs:
  # `download --print-uris` leaves out the files already in the current one.
  local uris name wanted=" " missing=() kernel_new=0
  uris=$(cd "$state" && apt-get "${apt[@]}" --print-uris download "${pkgs[@]}") ||
    vm_die "$VM_ARCH: apt-get cannot locate ${pkgs[*]}"
  while read -r _ name _; do
    wanted+="$name "
    [ -e "$debs/$name" ] && continue
    missing+=("${name%%_*}")
    [ "${name%%_*}" != "$kpkg" ] || kernel_new=1
  done <<<"$uris"
  [ "$(cat "$VM_DIR/kernel.package" 2>/dev/null)" = "$kpkg" ] || kernel_new=1
  if [ ${#missing[@]} -gt 0 ] || [ "$kernel_new" = 1 ]; then
    local deb
    for deb in "$debs"/*.deb; do
      [ ! -e "$deb" ] || [[ $wanted == *" ${deb##*/} "* ]] || rm -f "$deb"
    done
    if [ ${#missing[@]} -gt 0 ]; then
      (cd "$debs" && apt-get "${apt[@]}" -qq download "${missing[@]}") 2>&1 |
        { grep -v 'Download is performed unsandboxed' || true; }
    fi
    if [ "$kernel_new" = 1 ]; then
      rm -rf "$VM_DIR/kernel" "$VM_DIR/kernel.package"
      mkdir -p "$VM_DIR/kernel"
      dpkg-deb -x "$debs/${kpkg}"_*.deb "$VM_DIR/kernel" ||
        vm_die "$VM_ARCH: cannot unpack $kpkg from $debs"
      depmod -b "$VM_DIR/kernel" "$(vm_kernel_release)"
      echo "$kpkg" >"$VM_DIR/kernel.package"
    fi
    rm -rf "$VM_DIR/rootfs"
    mkdir -p "$VM_DIR/rootfs"
    for deb in "$debs"/*.deb; do
      case ${deb##*/} in linux-image-*) ;; *) dpkg-deb -x "$deb" "$VM_DIR/rootfs" ;; esac
    done
    vm_log "$VM_ARCH: fetched ${missing[*]:-nothing new} (kernel $(vm_kernel_release) from $kpkg)"
  else
    vm_log "$VM_ARCH: $kpkg (kernel $(vm_kernel_release)) is cached in $VM_DIR"
  fi
}

for arch in "$@"; do fetch_arch "$arch"; done
