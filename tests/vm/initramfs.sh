#!/usr/bin/env bash
# Builds a guest's initramfs:
#
#   tests/vm/initramfs.sh arm64|armhf OUT.cpio [PAYLOAD_DIR]
#
# busybox-static with every applet linked, the kernel modules of VM_MODULES (lib.sh) with
# their dependencies from the same kernel package, the C library for armhf (the armv7 agent
# links glibc), VM_BINARIES (arm64: nft) with the dynamic loader and the shared libraries
# they load, the two-stage init of tests/vm/guest/, and PAYLOAD_DIR copied to /payload (its
# run.sh is what the guest runs). Needs tests/vm/fetch.sh ARCH first; kmod, cpio and
# binutils (readelf) here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/vm/lib.sh
. "$here/lib.sh"

[ $# -ge 2 ] || vm_die "usage: tests/vm/initramfs.sh arm64|armhf OUT.cpio [PAYLOAD_DIR]"
vm_select_arch "$1" || exit 2
out=$2 payload=${3:-}
vm_require cpio cpio
vm_require modprobe kmod
vm_require busybox busybox-static
vm_require readelf binutils
release=$(vm_kernel_release)
kroot=$VM_DIR/kernel
[ -x "$VM_DIR/rootfs/bin/busybox" ] || vm_die "no $VM_ARCH busybox in $VM_DIR/rootfs: run tests/vm/fetch.sh $VM_ARCH"
[ -z "$payload" ] || [ -f "$payload/run.sh" ] || vm_die "payload $payload has no run.sh"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,newroot,etc,root,"lib/modules/$release"}

# 1. busybox: the applet list comes from the host's busybox of the same Debian release (the
#    guest's binary cannot run here).
cp "$VM_DIR/rootfs/bin/busybox" "$stage/bin/busybox"
for applet in $(busybox --list-full); do
  [ "$applet" = bin/busybox ] || ln -sf /bin/busybox "$stage/$applet"
done
mknod -m 600 "$stage/dev/console" c 5 1
mknod -m 666 "$stage/dev/null" c 1 3

# 2. modules and their dependencies; modprobe prints `builtin NAME` for built-in ones.
# shellcheck disable=SC2086 # VM_MODULES is a list of names
for module in $VM_MODULES; do
  modprobe -d "$kroot" -S "$release" --show-depends "$module" ||
    vm_die "$VM_ARCH kernel $release has no module $module"
done | awk '$1 == "insmod" { print $2 }' | sort -u | while read -r ko; do
  rel=${ko#"$kroot/lib/modules/$release/"}
  mkdir -p "$stage/lib/modules/$release/$(dirname "$rel")"
  cp "$ko" "$stage/lib/modules/$release/$rel"
done
cp "$kroot/lib/modules/$release"/modules.{order,builtin,builtin.modinfo} "$stage/lib/modules/$release/"
depmod -b "$stage" "$release"

# 3. glibc for the armv7 agent, where Debian puts it (its ld.so searches the multiarch dir).
if [ -d "$VM_DIR/rootfs/lib" ] && [ "$VM_ARCH" = armhf ]; then
  cp -a "$VM_DIR/rootfs/lib/." "$stage/lib/"
fi

# 4. VM_BINARIES, each with its program interpreter and its NEEDED libraries, recursively,
#    at their Debian paths (ld.so searches the multiarch dirs without an ld.so.cache).
#    Symbolic links are copied as the files they name.
add_elf() { # PATH inside the rootfs, without the leading /
  local rel=$1 interp lib dir
  [ ! -e "$stage/$rel" ] || return 0
  [ -e "$VM_DIR/rootfs/$rel" ] || vm_die "no /$rel in $VM_DIR/rootfs: run tests/vm/fetch.sh $VM_ARCH"
  mkdir -p "$stage/$(dirname "$rel")"
  cp -L "$VM_DIR/rootfs/$rel" "$stage/$rel"
  interp=$(readelf -lW "$VM_DIR/rootfs/$rel" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
  [ -z "$interp" ] || add_elf "${interp#/}"
  for lib in $(readelf -dW "$VM_DIR/rootfs/$rel" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'); do
    for dir in "lib/$VM_MULTIARCH" "usr/lib/$VM_MULTIARCH"; do
      if [ -e "$VM_DIR/rootfs/$dir/$lib" ]; then
        add_elf "$dir/$lib"
        continue 2
      fi
    done
    vm_die "/$rel needs $lib, which no package of VM_PACKAGES (lib.sh) brings: add its package"
  done
}
for binary in $VM_BINARIES; do add_elf "$binary"; done

# 5. init, users, payload.
cp "$here/guest/init" "$stage/init"
cp "$here/guest/init2" "$stage/sbin/init2"
echo "$VM_MODULES" >"$stage/etc/vm-modules"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$stage/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/etc/group"
[ -z "$payload" ] || cp -a "$payload" "$stage/payload"

(cd "$stage" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) >"$out"
vm_log "initramfs $out: $(du -h "$out" | cut -f1), kernel $release, payload ${payload:-none}"
