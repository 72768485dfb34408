#!/usr/bin/env bash
# Boots a guest: Debian's kernel (tests/vm/fetch.sh) with an initramfs
# (tests/vm/initramfs.sh), one vCPU, 512 MiB, pure cgroup v2, QEMU's TCG:
#
#   tests/vm/boot.sh [options] arm64|armhf
#     -i FILE   the initramfs (required)
#     -n        user network: the guest is 10.0.2.15, the host's 127.0.0.1 is 10.0.2.2
#     -f SPEC   a host forward, repeatable: tcp:127.0.0.1:HOSTPORT-:GUESTPORT (implies -n)
#     -d DIR    DIR shared read-write (9p), mounted at /host in the guest
#     -D FILE   the data disk, ext4 on /var/lib in the guest; made (512 MiB, sparse) if missing
#     -a ARGS   more kernel command line
#     -m MB     memory (default 512)
#     -t SEC    stop QEMU after SEC seconds (default 900)
#     -s        a shell on the console once the payload ends (Ctrl-A X quits QEMU)
#
# Prints each console line prefixed with the seconds since QEMU started. Exits with the
# payload's status (the guest's `CORACLE-RUN-EXIT rc=N`), 124 when the timeout stopped the
# guest, 125 when the guest ended without reporting one (a panic, a missing payload).
#
# Plain TCG: this machine's /dev/kvm runs only specially built guest kernels, and ARM guests
# cannot use it on x86 anyway.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/vm/lib.sh
. "$here/lib.sh"

initrd="" mem=$VM_MEMORY_MB shell=0 net=0 forwards=() share="" disk="" extra="" timeout_s=900
while getopts "i:nf:d:D:a:m:t:s" opt; do
  case $opt in
    i) initrd=$OPTARG ;;
    n) net=1 ;;
    f) forwards+=("$OPTARG") net=1 ;;
    d) share=$OPTARG ;;
    D) disk=$OPTARG ;;
    a) extra=$OPTARG ;;
    m) mem=$OPTARG ;;
    t) timeout_s=$OPTARG ;;
    s) shell=1 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || vm_die "usage: tests/vm/boot.sh [options] arm64|armhf (see the script's head)"
vm_select_arch "$1" || exit 2
[ -f "$initrd" ] || vm_die "no initramfs given (-i FILE): build one with tests/vm/initramfs.sh"
vm_require "${VM_QEMU[0]}" qemu-system-arm
kernel=$(vm_kernel)

append="console=$VM_CONSOLE $VM_CMDLINE"
[ "$shell" = 1 ] && append+=" coracle.shell=1"
qemu=("${VM_QEMU[@]}" -smp 1 -accel tcg -m "$mem" -kernel "$kernel" -initrd "$initrd"
  -append "$append $extra" -no-reboot)
if [ "$net" = 1 ]; then
  netdev="user,id=n0"
  for f in "${forwards[@]}"; do netdev+=",hostfwd=$f"; done
  # romfile= : no option ROM (firmware netboot code); the kernel is booted directly, and
  # without Debian's ipxe-qemu (a recommends of qemu-system-arm) QEMU refuses the device.
  qemu+=(-netdev "$netdev" -device 'virtio-net-pci,netdev=n0,romfile=')
else
  qemu+=(-nic none)
fi
if [ -n "$disk" ]; then
  if [ ! -e "$disk" ]; then
    vm_require mkfs.ext4 e2fsprogs
    truncate -s 512M "$disk"
    mkfs.ext4 -q -F "$disk"
  fi
  qemu+=(-drive "file=$disk,if=none,format=raw,id=d0" -device 'virtio-blk-pci,drive=d0')
fi
[ -z "$share" ] || qemu+=(-virtfs "local,path=$share,mount_tag=host,security_model=none,id=host")

if [ "$shell" = 1 ]; then
  exec "${qemu[@]}" -nographic
fi
start=$EPOCHREALTIME
status=$(mktemp)
pidfile=$status.pid
# Stopped itself (a caller's cleanup), it stops QEMU too.
# shellcheck disable=SC2317 # called by the trap
stop_qemu() { [ ! -s "$pidfile" ] || kill "$(cat "$pidfile")" 2>/dev/null || true; }
trap 'stop_qemu; exit 143' TERM INT
trap 'rm -f "$status" "$pidfile"' EXIT
set +e
timeout -k 5 "$timeout_s" "${qemu[@]}" -pidfile "$pidfile" -display none -serial stdio -monitor none </dev/null 2>&1 |
  while IFS= read -r line; do
    line=${line%$'\r'}
    printf '[%6s] %s\n' "$(vm_elapsed "$start")" "$line"
    case $line in CORACLE-RUN-EXIT\ rc=*) echo "${line#CORACLE-RUN-EXIT rc=}" >"$status" ;; esac
  done
qemu_rc=${PIPESTATUS[0]}
set -e
if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
  echo "vm: $VM_ARCH guest stopped by the ${timeout_s} s timeout" >&2
  exit 124
fi
rc=$(cat "$status")
if [ -z "$rc" ]; then
  echo "vm: $VM_ARCH guest ended (QEMU status $qemu_rc) without a payload status" >&2
  exit 125
fi
exit "$rc"
