#!/bin/sh
# Guest payload: `coracle-agent run` on OCI bundles (/payload/coracle-agent), on the guest's
# own kernel with cgroup v2 only. One line per check, `SMOKE ok: ...` or `SMOKE FAIL: ...`,
# then `SMOKE-RESULT pass=N fail=M`; fails when any check failed.
#   limits    memory.max, memory.swap.max, pids.max, cpu.max in the container's cgroup, seen
#             from the host side and from inside (cgroup namespace); the cgroup removed after
#   oom       a container allocating past 32 MiB is killed: status 137, reported
#   pids      a fork past pids.max is refused
#   exit      the container's exit status is the agent's
#   userns    a container in a user namespace (root is host uid 100000)
# shellcheck disable=SC2016 # the containers' scripts expand inside the containers
A=/payload/coracle-agent
pass=0 fail=0
# check WHAT COMMAND...: a check passes when COMMAND succeeds.
check() {
  what=$1
  shift
  if "$@"; then
    echo "SMOKE ok: $what"
    pass=$((pass + 1))
  else
    echo "SMOKE FAIL: $what"
    fail=$((fail + 1))
  fi
}
echo "smoke: $($A --version) on $(uname -r) $(uname -m)"

# A busybox rootfs, read-only, shared by every bundle; on the data disk (ext4).
R=/var/lib/smoke-rootfs
mkdir -p $R/bin $R/etc $R/proc $R/sys $R/dev $R/tmp $R/root
cp /bin/busybox $R/bin/
for applet in $(busybox --list); do [ "$applet" = busybox ] || ln -s busybox "$R/bin/$applet"; done
cp /etc/passwd /etc/group $R/etc/

# bundle NAME MEMORY_BYTES PIDS SCRIPT [MORE_NAMESPACES [MORE_LINUX_FIELDS]]: prints its dir.
bundle() {
  d=/tmp/bundles/$1
  mkdir -p "$d"
  script=$(printf '%s' "$4" | sed 's/\\/\\\\/g; s/"/\\"/g')
  cat >"$d/config.json" <<JSON
{
  "ociVersion": "1.0.2",
  "process": {"user": {"uid": 0, "gid": 0}, "args": ["/bin/sh", "-c", "$script"], "cwd": "/",
    "env": ["PATH=/bin"], "noNewPrivileges": true,
    "capabilities": {"bounding": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID", "CAP_KILL"]}},
  "root": {"path": "$R", "readonly": true},
  "hostname": "$1",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755", "size=1m"]},
    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "ro"]}
  ],
  "linux": {
    "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}, {"type": "cgroup"}$5],$6
    "resources": {"memory": {"limit": $2, "swap": $2}, "pids": {"limit": $3}, "cpu": {"quota": 50000, "period": 100000}},
    "maskedPaths": ["/proc/kcore", "/proc/keys"],
    "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
  }
}
JSON
  echo "$d"
}
# run NAME BUNDLE: runs the container in the foreground, its output in /tmp/NAME.out.
run() {
  $A run --bundle "$2" "$1" >"/tmp/$1.out" 2>&1
  rc=$?
  sed "s/^/  $1| /" "/tmp/$1.out"
  return $rc
}
MiB=1048576

b=$(bundle limits $((32 * MiB)) 16 'echo "cgroup $(cat /proc/self/cgroup)"; echo "inside memory.max=$(cat /sys/fs/cgroup/memory.max) pids.max=$(cat /sys/fs/cgroup/pids.max) cpu.max=$(cat /sys/fs/cgroup/cpu.max)"; sleep 3')
run limits "$b" &
runner=$!
C=/sys/fs/cgroup/coracle/limits
i=0
while [ ! -e $C/cgroup.procs ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.5
host="memory.max=$(cat $C/memory.max) memory.swap.max=$(cat $C/memory.swap.max) pids.max=$(cat $C/pids.max) cpu.max=$(cat $C/cpu.max)"
wait $runner
rc=$?
check "limits: the container ran (status $rc)" [ $rc = 0 ]
check "limits: $C holds $host" \
  [ "$host" = "memory.max=33554432 memory.swap.max=0 pids.max=16 cpu.max=50000 100000" ]
check "limits: seen inside" grep -q 'inside memory.max=33554432 pids.max=16 cpu.max=50000 100000' /tmp/limits.out
check "limits: the container's cgroup namespace" grep -q '^cgroup 0::/$' /tmp/limits.out
check "limits: $C removed after the exit" [ ! -d $C ]

b=$(bundle oom $((32 * MiB)) 16 'cat /dev/zero | tail')
run oom "$b"
rc=$?
check "oom: killed, status $rc (expected 137)" [ $rc = 137 ]
check "oom: reported" grep -qi oom /tmp/oom.out

b=$(bundle pids $((32 * MiB)) 6 'i=0; while [ $i -lt 10 ]; do sleep 30 & i=$((i + 1)); done; kill $(jobs -p); exit 0')
run pids "$b"
check "pids: a fork past pids.max refused" grep -q "can't fork" /tmp/pids.out

b=$(bundle exit $((32 * MiB)) 16 'exit 42')
run exit "$b"
rc=$?
check "exit: status $rc (expected 42)" [ $rc = 42 ]

b=$(bundle userns $((32 * MiB)) 16 'cat /proc/self/uid_map; id -u' ', {"type": "user"}' '
    "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
    "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],')
run userns "$b"
rc=$?
check "userns: the container ran (status $rc)" [ $rc = 0 ]
check "userns: root is host uid 100000" grep -Eq '^ *0 +100000 +65536' /tmp/userns.out

echo "SMOKE-RESULT pass=$pass fail=$fail"
[ $fail = 0 ]
