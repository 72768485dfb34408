#!/usr/bin/env bash
# Says whether the kernel has the memory cgroup controller enabled, and how to enable it on a
# Raspberry Pi when it is not (Pi kernels ship with it off). Without it the agent cannot
# enforce mem_limit or see OOM kills; it reports that to the controller as a device condition.
#
#   check-memory-cgroup.sh [ROOT]   (ROOT: where /boot lives, default /)
#
# Exits 0 when enabled, 1 when disabled. Reads /sys/fs/cgroup (cgroup v2) or /proc/cgroups
# (v1); CORACLE_CGROUP_FS and CORACLE_PROC_CGROUPS point them elsewhere for tests.
set -euo pipefail
root=${1:-}
root=${root%/}
cgroup_fs=${CORACLE_CGROUP_FS:-/sys/fs/cgroup}
proc_cgroups=${CORACLE_PROC_CGROUPS:-/proc/cgroups}

if [ -f "$cgroup_fs/cgroup.controllers" ]; then
  version=v2
  # v2: the root lists every controller the kernel enabled.
  grep -qw memory "$cgroup_fs/cgroup.controllers" && enabled=yes || enabled=no
elif [ -r "$proc_cgroups" ]; then
  version=v1
  # v1: columns are subsys_name hierarchy num_cgroups enabled.
  enabled=$(awk '$1 == "memory" { print ($4 == 1 ? "yes" : "no"); found = 1 }
                 END { if (!found) print "no" }' "$proc_cgroups")
else
  echo "memory cgroup: cannot tell (neither $cgroup_fs/cgroup.controllers nor $proc_cgroups)"
  exit 1
fi

if [ "$enabled" = yes ]; then
  echo "memory cgroup: enabled (cgroup $version)"
  exit 0
fi

cmdline="$root/boot/firmware/cmdline.txt" # Raspberry Pi OS Bookworm and later
[ -f "$cmdline" ] || cmdline="$root/boot/cmdline.txt" # Bullseye and earlier
cat <<MSG
memory cgroup: DISABLED in this kernel (cgroup $version). Memory limits cannot be enforced and
OOM kills are not seen until it is enabled. On a Raspberry Pi, append to the single line of
$cmdline:
    cgroup_enable=memory cgroup_memory=1
for example:
    sudo sed -i '1 s/\$/ cgroup_enable=memory cgroup_memory=1/' $cmdline
then reboot. (The agent also reports this to the controller as a device condition.)
MSG
exit 1
