#!/usr/bin/env bash
# The agent's runtime smoke test in a guest: `coracle-agent run` on bundles (limits, OOM,
# pids, exit status, user namespace; payloads/runtime-smoke.sh) on Debian's kernel, cgroup v2
# only, 512 MiB, container data on an ext4 disk:
#
#   tests/vm/smoke.sh arm64|armhf AGENT_BINARY
#
# Exits 0 when every check passed; otherwise prints the failed checks and the console's tail.
# The console log is kept in $CORACLE_VM_WORK/smoke-ARCH/console.log (default /tmp/coracle-vm).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/vm/lib.sh
. "$here/lib.sh"

[ $# -eq 2 ] || vm_die "usage: tests/vm/smoke.sh arm64|armhf AGENT_BINARY"
vm_select_arch "$1" || exit 2
agent=$2
[ -x "$agent" ] || vm_die "no agent binary at $agent (cross/build.sh $VM_AGENT_ARCH)"
work=${CORACLE_VM_WORK:-/tmp/coracle-vm}/smoke-$VM_ARCH
rm -rf "$work"
mkdir -p "$work/payload"
cp "$agent" "$work/payload/coracle-agent"
cp "$here/payloads/runtime-smoke.sh" "$work/payload/run.sh"
"$here/initramfs.sh" "$VM_ARCH" "$work/initramfs.cpio" "$work/payload" 2>/dev/null
rc=0
"$here/boot.sh" -i "$work/initramfs.cpio" -D "$work/disk.img" -t 600 "$VM_ARCH" >"$work/console.log" 2>&1 || rc=$?
grep -E 'SMOKE' "$work/console.log" | sed 's/^\[ *[0-9.]*\] //'
if [ "$rc" != 0 ]; then
  echo "smoke: FAIL ($VM_ARCH guest, status $rc); console tail ($work/console.log):"
  tail -n 40 "$work/console.log"
  exit 1
fi
rm -f "$work/disk.img"
