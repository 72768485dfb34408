#!/usr/bin/env bash
# A whole deploy to a guest board: the controller (`coracle serve`) here, the agent daemon in
# an arm64 or armhf guest (512 MiB, pure cgroup v2), then, each with `coracle deploy --wait`:
#
#   1. hello:1 (busybox httpd with an HTTP health check) goes healthy and serves its page;
#   2. hello:2 (one changed file) arrives as a delta and serves the new page;
#   3. an app whose health check fails is rolled back by the device, which serves hello:2 again;
#   4. hello:2 moves to the guest's own network (`network_mode: host`) and serves there;
#   5. the agent updates itself over the air: the same build re-stamped as another version
#      (another binary for digests, releases and reports) is released (`coracle agent
#      release`) and rolled out to the guest's tag (`coracle agent rollout --wait`); the
#      guest downloads it, writes its free A/B slot, runs it on trial under the old build,
#      confirms it once connected and reports the new version, with its container kept
#      (the same pid) and the page still served.
#
# In 1-3 the app runs on its default bridged network (a bridge, a veth pair, the agent's
# nftables table) and publishes its port 8080 as the guest's 8088 (`ports: ["8088:8080"]`).
# Every page is read on the guest's port 8088 twice: inside the guest (127.0.0.1:8088: for
# a published port, the nft output chain) and from here through QEMU's forward to the
# guest's 10.0.2.15:8088 (the prerouting chain).
#
#   tests/vm/deploy.sh arm64|armhf AGENT_BINARY CORACLE_BINARY
#
# Prints one line per step with its time; on failure, the step, the device's report and the
# ends of the agent's and the guest's logs. Work dir: $CORACLE_VM_WORK/deploy-ARCH (default
# /tmp/coracle-vm), kept for reading afterwards.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/vm/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/vm/rig.sh
. "$here/rig.sh"

[ $# -eq 3 ] || vm_die "usage: tests/vm/deploy.sh arm64|armhf AGENT_BINARY CORACLE_BINARY"
vm_select_arch "$1" || exit 2
agent=$2 coracle=$3
work=${CORACLE_VM_WORK:-/tmp/coracle-vm}/deploy-$VM_ARCH
start=$EPOCHREALTIME
step() { echo "deploy [$(vm_elapsed "$start") s] $*"; }
failed() {
  echo "deploy: FAIL: $*"
  echo "--- device report"
  rig_coracle device show "$RIG_DEVICE" 2>&1 | head -n 60 || true
  echo "--- agent log (tail)"
  tail -n 30 "$RIG_WORK/share/agent.log" 2>/dev/null || true
  echo "--- guest console (tail)"
  tail -n 30 "$RIG_WORK/console.log" || true
  exit 1
}
trap rig_stop EXIT

mkdir -p "$work"
for version in 1 2; do
  rm -rf "$work/image-$version"
  "$here/image.sh" "$VM_ARCH" "$work/image-$version" "hello v$version from the $VM_ARCH guest"
done
rig_start "$work/rig" "$VM_ARCH" "$agent" "$coracle"
step "controller up, guest booted, $RIG_DEVICE online"
for version in 1 2; do
  rig_coracle image import "$work/image-$version" --tag "hello:$version" --platform "$VM_PLATFORM" \
    >/dev/null 2>&1 || failed "coracle image import hello:$version"
done

# app VERSION HEALTH_PATH [host]: the compose file of hello:VERSION checked on HEALTH_PATH,
# on its bridged network publishing 8080 as 8088, or with `host` on the guest's own
# network listening on 8088 itself. `init: true`: httpd as PID 1 ignores SIGTERM, and
# every replaced container would wait out its 10 s grace period.
app() {
  local net='ports: ["8088:8080"]' port=8080
  [ "${3:-}" != host ] || net='network_mode: host' port=8088
  cat >"$work/app.yml" <<YAML
services:
  hello:
    image: hello:$1
    command: ["/bin/busybox", "httpd", "-f", "-p", "0.0.0.0:$port", "-h", "/www"]
    $net
    init: true
    mem_limit: 32m
    pids_limit: 32
    cpus: 0.5
    restart: always
    healthcheck:
      test: ["HTTP", "$port", "$2"]
      interval: 2s
      timeout: 1s
      retries: 3
YAML
  echo "$work/app.yml"
}
deploy() { rig_coracle deploy "$1" --device "$RIG_DEVICE" --wait --timeout 5m 2>&1; }
# serves WHAT VERSION: the page on the guest's port 8088, inside the guest and from here.
serves() {
  local inside outside
  inside=$(rig_guest_get / 2>&1) ||
    failed "$1: the guest's own 127.0.0.1:8088 does not answer: $inside"
  [[ $inside == "hello v$2"* ]] || failed "$1: the guest's 127.0.0.1:8088 served '$inside'"
  outside=$(rig_app_get / 2>&1) ||
    failed "$1: the guest's 8088 does not answer through QEMU's forward: $outside"
  [[ $outside == "hello v$2"* ]] || failed "$1: the forward to the guest's 8088 served '$outside'"
  page=$outside
}

out=$(deploy "$(app 1 /)") || failed "hello:1 was not committed: $out"
serves "hello:1 (committed)" 1
step "1. hello:1 healthy and serving on its published port: $page"

out=$(deploy "$(app 2 /)") || failed "the update to hello:2 was not committed: $out"
serves "after the update to hello:2" 2
log=$(sed 's/\x1b\[[0-9;]*m//g' "$RIG_WORK/share/agent.log")
pulled=$(grep 'image pulled' <<<"$log" | tail -n 1)
[[ $pulled == *delta=1* && $pulled == *full=0* ]] ||
  failed "hello:2 did not arrive as a delta: ${pulled:-no 'image pulled' line in the agent log}"
grep -q 'successor took over service=hello' <<<"$log" ||
  failed "hello:2 did not update start-first (no 'successor took over' in the agent log)"
step "2. hello:2 arrived as a delta, started beside hello:1, took over the published port and serves: $page"

if out=$(deploy "$(app 2 /no-such-page)"); then
  failed "an app failing its health check was committed: $out"
fi
[[ $out == *"rolled back"* ]] || failed "the failing app was not rolled back: $out"
serves "after the rollback" 2
step "3. the failing app was rolled back ($(grep -o 'rolled back.*' <<<"$out" | head -n 1)); hello:2 serves again"

out=$(deploy "$(app 2 / host)") || failed "hello:2 on the guest's network was not committed: $out"
serves "after the move to the guest's network" 2
step "4. hello:2 moved to the guest's own network (network_mode: host), its published port released: serves on 8088 itself"
# restamp FROM TO VERSION: FROM with its `coracle-agent-version=` stamp (NUL padded to 64
# bytes, proto/src/agent_update.rs) set to VERSION.
restamp() {
  python3 - "$@" <<'PY'
import sys
src, dst, version = sys.argv[1:]
data = bytearray(open(src, "rb").read())
prefix, length = b"coracle-agent-version=", 64
at = data.find(prefix)
if at < 0:
    sys.exit(f"{src}: no {prefix.decode()} stamp")
stamp = (prefix + version.encode()).ljust(length, b"\0")
if len(stamp) > length:
    sys.exit(f"version {version} does not fit the {length}-byte stamp")
data[at:at + length] = stamp
open(dst, "wb").write(data)
PY
}
# running_containers: the guest's `ID PID` lines (payloads/agent-daemon.sh, every 2 s),
# from a list written after this call.
running_containers() {
  touch "$work/asked"
  rig_wait "the guest's list of running containers" 30 test "$RIG_WORK/share/containers" -nt "$work/asked"
  sort "$RIG_WORK/share/containers"
}
reported_agent() {
  rig_coracle device show "$RIG_DEVICE" | python3 -c 'import json, sys; print(json.load(sys.stdin)["reported"]["agent_version"])'
}

before=$(running_containers)
[ -n "$before" ] || failed "the guest reports no running container before the agent update"
old_version=$(reported_agent) || failed "the device reports no agent version"
new_version="$old_version-ota"
restamp "$agent" "$work/coracle-agent-ota" "$new_version" || failed "cannot re-stamp $agent"
rig_coracle device tag "$RIG_DEVICE" ring=vm >/dev/null || failed "coracle device tag"
out=$(rig_coracle agent release "$work/coracle-agent-ota" 2>&1) || failed "coracle agent release: $out"
[[ $out == *"released agent $new_version for $VM_PLATFORM"* ]] || failed "coracle agent release said: $out"
out=$(rig_coracle agent rollout "$new_version" --to ring=vm --waves 100% --health-window 5s \
  --apply-timeout 5m --wait --timeout 6m 2>&1) || failed "the agent rollout did not complete: $out"
reported=$(reported_agent)
[ "$reported" = "$new_version" ] || failed "the device reports agent $reported after the rollout, not $new_version"
log=$(sed 's/\x1b\[[0-9;]*m//g' "$RIG_WORK/share/agent.log")
grep -q 'agent build on trial confirmed' <<<"$log" || failed "no 'agent build on trial confirmed' in the agent log"
after=$(running_containers)
[ "$after" = "$before" ] || failed "the agent update did not keep the container: before '$before', after '$after'"
serves "after the agent update" 2
step "5. the agent updated itself over the air: $old_version -> $new_version (slot swapped, trial confirmed), container kept ($after), serves: $page"

echo "deploy: PASS ($VM_ARCH, $(vm_elapsed "$start") s)"
