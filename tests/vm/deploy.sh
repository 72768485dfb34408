#!/usr/bin/env bash
# A whole deploy to a guest board: the controller (`coracle serve`) here, the agent daemon in
# an arm64 or armhf guest (512 MiB, pure cgroup v2), then, each with `coracle deploy --wait`:
#
#   1. hello:1 (busybox httpd with an HTTP health check) goes healthy and serves its page;
#   2. hello:2 (one changed file) arrives as a delta and serves the new page;
#   3. an app whose health check fails is rolled back by the device, which serves hello:2 again.
#
#   tests/vm/deploy.sh arm64|armhf AGENT_BINARY CORACLE_BINARY
#
# Prints one line per step with its time; on failure, the step, the device's report and the
# ends of the agent's and the guest's logs. Work dir: $CORACLE_VM_WORK/deploy-ARCH (default
# /tmp/coracle-vm), kept for reading afterwards.
#
# The services use `network_mode: host`: the guest has no nftables (bridged networks need
# `nft`), so the app listens on the guest's own port 8088, forwarded from the host.
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

# app VERSION HEALTH_PATH: the compose file of hello:VERSION checked on HEALTH_PATH.
app() {
  cat >"$work/app.yml" <<YAML
services:
  hello:
    image: hello:$1
    command: ["/bin/busybox", "httpd", "-f", "-p", "0.0.0.0:8088", "-h", "/www"]
    network_mode: host
    mem_limit: 32m
    pids_limit: 32
    cpus: 0.5
    restart: always
    healthcheck:
      test: ["HTTP", "8088", "$2"]
      interval: 2s
      timeout: 1s
      retries: 3
YAML
  echo "$work/app.yml"
}
deploy() { rig_coracle deploy "$1" --device "$RIG_DEVICE" --wait --timeout 5m 2>&1; }

out=$(deploy "$(app 1 /)") || failed "hello:1 was not committed: $out"
page=$(rig_app_get /) || failed "hello:1 is committed but does not answer on the guest's port 8088"
[[ $page == "hello v1"* ]] || failed "hello:1 served '$page'"
step "1. hello:1 healthy and serving: $page"

out=$(deploy "$(app 2 /)") || failed "the update to hello:2 was not committed: $out"
page=$(rig_app_get /) || failed "hello:2 is committed but does not answer"
[[ $page == "hello v2"* ]] || failed "after the update the app served '$page'"
pulled=$(sed 's/\x1b\[[0-9;]*m//g' "$RIG_WORK/share/agent.log" | grep 'image pulled' | tail -n 1)
[[ $pulled == *delta=1* && $pulled == *full=0* ]] ||
  failed "hello:2 did not arrive as a delta: ${pulled:-no 'image pulled' line in the agent log}"
step "2. hello:2 arrived as a delta and serves: $page"

if out=$(deploy "$(app 2 /no-such-page)"); then
  failed "an app failing its health check was committed: $out"
fi
[[ $out == *"rolled back"* ]] || failed "the failing app was not rolled back: $out"
page=$(rig_app_get /) || failed "after the rollback the app does not answer"
[[ $page == "hello v2"* ]] || failed "after the rollback the app served '$page'"
step "3. the failing app was rolled back ($(grep -o 'rolled back.*' <<<"$out" | head -n 1)); hello:2 serves again"
echo "deploy: PASS ($VM_ARCH, $(vm_elapsed "$start") s)"
