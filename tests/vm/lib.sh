# shellcheck shell=bash disable=SC2034 # the variables are read by the scripts that source this
# The VM harness's one table of guest architectures, its cache and its messages: sourced by
# every script in tests/vm/, .ci/vm-check and benchmarks/vm_device_budget.sh, so the kernel
# package, the QEMU board and the console never disagree between them.

# Downloaded kernels live outside the clone, so CI runs after the first are incremental.
VM_CACHE=${CORACLE_VM_CACHE:-/var/cache/coracle/vm}
# Every guest: one vCPU and 512 MiB, the smallest board the project supports.
VM_MEMORY_MB=${CORACLE_VM_MEMORY_MB:-512}
# Pure cgroup v2, as Raspberry Pi OS and Debian 12 with systemd mount it; panic=-1 reboots
# at once and QEMU's -no-reboot turns that into an exit, so a dead guest never hangs CI.
VM_CMDLINE="cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 panic=-1 quiet loglevel=4"
# What the guest loads (with dependencies, from the same kernel package); built-in ones are
# skipped. overlay: image layers; loop, veth, bridge: the runtime's tests and app networks;
# virtio, 9p, ext4: the console's disk and the shared directory; then what the agent's
# nftables table (agent/src/network/nft.rs) asks of the kernel: nat chains (nft_chain_nat,
# with nf_nat and nf_conntrack), `dnat to` (nft_nat), `masquerade` (nft_masq),
# `ct status dnat` (nft_ct), `fib daddr type local` in an ip table (nft_fib_ipv4). No
# br_netfilter: the table filters routed traffic only.
VM_MODULES="overlay loop veth bridge virtio_pci virtio_mmio virtio_net virtio_blk 9pnet_virtio 9p ext4 virtio_rng"
VM_MODULES+=" nf_tables nft_chain_nat nft_nat nft_masq nft_ct nft_fib_ipv4"
# Debian packages fetched besides the kernel and busybox-static, unpacked into the rootfs:
# nftables and every library `nft` loads (its NEEDED entries, then theirs: libnftables1 ->
# libmnl0 libnftnl11 libxtables12 libjansson4 libgmp10; libedit2 -> libbsd0 libmd0
# libtinfo6; libc6 for all, with the dynamic loader), as Raspberry Pi OS installs it for
# the agent's bridged app networks. apt-get download takes no dependencies, so they are
# named here; initramfs.sh fails naming a library that is missing. vm_select_arch adds the
# architecture's own.
VM_NFT_PACKAGES="nftables libnftables1 libmnl0 libnftnl11 libxtables12 libjansson4 libgmp10 libedit2 libbsd0 libmd0 libtinfo6 libc6"
# Files of that rootfs packed into the initramfs with the shared libraries they load.
VM_BINARIES=usr/sbin/nft

vm_log() { echo "vm: $*" >&2; }
vm_die() {
  echo "vm: error: $*" >&2
  exit 1
}

# Sets for a Debian architecture (arm64 | armhf): VM_KERNEL_META (the meta package naming
# the current kernel), VM_QEMU (the system emulator and its board), VM_CONSOLE,
# VM_AGENT_ARCH (cross/build.sh's name for the agent built for it), VM_PLATFORM (OCI),
# VM_MULTIARCH (Debian's library directory name) and VM_PACKAGES (see VM_NFT_PACKAGES).
vm_select_arch() {
  case "$1" in
    arm64)
      VM_KERNEL_META=linux-image-arm64
      # Cortex-A72 as on a Raspberry Pi 4; the virt board boots -kernel directly, no firmware.
      VM_QEMU=(qemu-system-aarch64 -M virt -cpu cortex-a72)
      VM_AGENT_ARCH=aarch64
      VM_PLATFORM=linux/arm64
      VM_MULTIARCH=aarch64-linux-gnu
      VM_PACKAGES=$VM_NFT_PACKAGES
      ;;
    armhf)
      # -armmp: Debian's multiplatform ARMv7 kernel (Cortex-A15/A7 as on a Pi 2 or 3 in 32-bit).
      VM_KERNEL_META=linux-image-armmp
      VM_QEMU=(qemu-system-arm -M 'virt,highmem=off' -cpu cortex-a15)
      VM_AGENT_ARCH=armv7
      VM_PLATFORM=linux/arm/v7
      VM_MULTIARCH=arm-linux-gnueabihf
      # The armv7 agent links glibc and libgcc_s: initramfs.sh packs the whole of /lib.
      VM_PACKAGES="$VM_NFT_PACKAGES libgcc-s1"
      ;;
    *)
      echo "vm: unknown guest architecture '$1': expected arm64 or armhf" >&2
      return 2
      ;;
  esac
  VM_ARCH=$1
  VM_CONSOLE=ttyAMA0
  VM_DIR=$VM_CACHE/$1
}

# Fails with the Debian package to install when a host command is missing.
vm_require() { # COMMAND PACKAGE
  command -v "$1" >/dev/null || vm_die "$1 is missing on this machine (Debian package: $2; .ci/setup installs it)"
}

# The kernel image and release fetched by fetch.sh, or a clear error naming the step to run.
vm_kernel() {
  local k
  k=$(find "$VM_DIR/kernel/boot" -maxdepth 1 -name 'vmlinuz-*' 2>/dev/null | head -n 1)
  [ -n "$k" ] || vm_die "no $VM_ARCH kernel in $VM_DIR/kernel: run tests/vm/fetch.sh $VM_ARCH first"
  echo "$k"
}
vm_kernel_release() {
  local k
  k=$(vm_kernel) || exit 1
  echo "${k##*/vmlinuz-}"
}

# Seconds since $1 (an $EPOCHREALTIME), one decimal.
vm_elapsed() {
  local now=${EPOCHREALTIME/./} then=${1/./}
  local ms=$(((now - then) / 1000))
  printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}
