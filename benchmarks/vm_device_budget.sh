#!/usr/bin/env bash
# Device budgets on a real device kernel (issue 18 item 5): Debian 12's arm64 kernel under
# QEMU (TCG, one Cortex-A72, 512 MiB, pure cgroup v2, data dir on an ext4 disk), the static
# aarch64 agent as a daemon, the controller on this machine (tests/vm/rig.sh). Prints a table:
#
#   - the agent's RSS idle (no app) and with 5 containers (busybox httpd, health-checked);
#   - boot to agent online, and first deploy (pull + start + healthy) of the 5 services;
#   - boot to app healthy: the guest powered off and booted again with the app installed,
#     from QEMU's start until the agent reports all 5 services healthy;
#   - bytes written to the data disk (/sys/block/vda/stat in the guest) by the first deploy
#     (pull, unpack, state; counted until 40 s after it, past the kernel's 30 s dirty-page
#     expiry), then while idle with the 5 containers running over a bounded window
#     (WINDOW_S, default 300 s), extrapolated to an hour. The agent's log goes to the host's share, not the disk (on a board it
#     goes to journald).
#
#   benchmarks/vm_device_budget.sh [AGENT_BINARY [CORACLE_BINARY]]
#
# Defaults: the agent from `cross/build.sh aarch64 --locked`, the controller
# $CARGO_TARGET_DIR/debug/coracle (built if missing). Run as root from the repository root.
# TCG emulates the CPU: times are an emulated board's, several times slower than a Pi 4's.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD/tests/vm
# shellcheck source=tests/vm/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/vm/rig.sh
. "$here/rig.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/coracle/target}
window=${WINDOW_S:-300}
agent=${1:-}
coracle=${2:-$CARGO_TARGET_DIR/debug/coracle}
[ -n "$agent" ] || agent=$(cross/build.sh aarch64 --locked)
[ -x "$coracle" ] || cargo build --locked -p coracle-controller --bin coracle
work=${CORACLE_VM_WORK:-/tmp/coracle-vm}/budget

vm_select_arch arm64
tests/vm/fetch.sh arm64
trap rig_stop EXIT
mkdir -p "$work"
rm -rf "$work/image"
tests/vm/image.sh arm64 "$work/image" "hello from the budget guest"

rig_start "$work/rig" arm64 "$agent" "$coracle"
boot_online=$(vm_elapsed "$RIG_BOOTED")
rig_coracle image import "$work/image" --tag hello:1 --platform linux/arm64 >/dev/null 2>&1

# The last sample's field N (payloads/agent-daemon.sh: uptime rss_kB sectors containers).
sample() { tail -n 1 "$RIG_WORK/share/samples" | cut -d' ' -f"$1"; }
settle() { sleep 20; } # a few health checks and samples
settle
rss_idle=$(sample 2)

{
  echo "services:"
  for i in 1 2 3 4 5; do
    cat <<YAML
  web$i:
    image: hello:1
    command: ["/bin/busybox", "httpd", "-f", "-p", "0.0.0.0:$((8087 + i))", "-h", "/www"]
    network_mode: host
    mem_limit: 16m
    restart: always
    healthcheck:
      test: ["HTTP", "$((8087 + i))", "/"]
      interval: 10s
YAML
  done
} >"$work/five.yml"
before_deploy=$(sample 3)
t0=$EPOCHREALTIME
rig_coracle deploy "$work/five.yml" --device "$RIG_DEVICE" --wait --timeout 10m >/dev/null 2>&1 ||
  vm_die "the 5 services did not come up: $(tail -n 20 "$RIG_WORK/share/agent.log")"
first_deploy=$(vm_elapsed "$t0")
sleep 40 # settled, and the deploy's dirty pages written back
rss_five=$(sample 2) containers=$(sample 4)
deploy_sectors=$(($(sample 3) - before_deploy))

sectors0=$(sample 3)
t0=$EPOCHREALTIME
sleep "$window"
sectors1=$(sample 3)
elapsed=$(vm_elapsed "$t0")
per_hour=$(awk -v s=$((sectors1 - sectors0)) -v t="$elapsed" 'BEGIN { printf "%d", s * 512 * 3600 / t }')

rig_halt
rig_boot
healthy() {
  [ "$(sed 's/\x1b\[[0-9;]*m//g' "$RIG_WORK/share/agent.log" |
    grep 'health changed' | grep 'health=Healthy' | grep -o 'service=web[0-9]' | sort -u | wc -l)" = 5 ]
}
rig_wait "the 5 services healthy after the reboot" 600 healthy
boot_healthy=$(vm_elapsed "$RIG_BOOTED")
agent_started=$(grep CORACLE-AGENT-STARTED "$RIG_WORK/console.log" | tail -n 1 | sed 's/^\[ *\([0-9.]*\)\].*/\1/')

kib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1024 }'; }
echo
echo "Device budget: Debian 12 arm64 kernel $(vm_kernel_release), QEMU TCG (1 Cortex-A72), ${VM_MEMORY_MB} MiB, cgroup v2 only"
printf '%-48s %14s\n' "measure" "value"
printf '%-48s %11s kB\n' "agent RSS, idle (no containers)" "$rss_idle"
printf '%-48s %11s kB\n' "agent RSS, $containers containers running" "$rss_five"
printf '%-48s %12s s\n' "first boot: QEMU start to agent online" "$boot_online"
printf '%-48s %12s s\n' "first deploy of 5 services to all healthy" "$first_deploy"
printf '%-48s %12s s\n' "reboot: QEMU start to agent started" "$agent_started"
printf '%-48s %12s s\n' "reboot: QEMU start to 5 services healthy" "$boot_healthy"
printf '%-48s %11s KiB\n' "data disk writes, first deploy (1 MB image)" "$(kib $((deploy_sectors * 512)))"
printf '%-48s %11s KiB\n' "data disk writes in ${elapsed} s idle (5 running)" "$(kib $(((sectors1 - sectors0) * 512)))"
printf '%-48s %11s KiB\n' "data disk writes per hour idle (extrapolated)" "$(kib "$per_hour")"
