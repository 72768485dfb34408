# shellcheck shell=bash
# A controller on this machine and one agent in a guest, joined by QEMU's user network: the
# guest reaches the host's 127.0.0.1 as 10.0.2.2 (the controller's public_host) and the
# host reaches the guest's app port through a forward. Sourced by tests/vm/deploy.sh and
# benchmarks/vm_device_budget.sh (after lib.sh):
#
#   rig_start WORK ARCH AGENT CORACLE   controller up, device enrolled, guest booted, online
#   rig_coracle ARGS...                 the coracle CLI against the rig's controller
#   rig_app_get PATH                    GET the guest's port 8088 through the forward
#   rig_guest_get PATH                  GET 127.0.0.1:8088 inside the guest (its own wget)
#   rig_halt                            agent stopped, guest powered off (data disk kept)
#   rig_boot                            the guest booted again, its agent started
#   rig_stop                            rig_halt, then the controller stopped
#
# Sets RIG_WORK, RIG_DEVICE, RIG_APP_PORT and RIG_BOOTED (the last boot's $EPOCHREALTIME).
# The guest's console is $RIG_WORK/console.log, the agent's log $RIG_WORK/share/agent.log,
# its samples $RIG_WORK/share/samples (see payloads/agent-daemon.sh).
# shellcheck disable=SC2034 # RIG_* are read by the scripts that source this

RIG_DEVICE=vm-board
rig_boots=0
rig_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rig_pids=() # the controller's

# A port nothing listens on now (the kernel picks it).
rig_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

rig_coracle() { "$RIG_CORACLE" "$@" --data-dir "$RIG_WORK/controller"; }
rig_app_get() { curl -fsS --max-time 10 "http://127.0.0.1:$RIG_APP_PORT$1"; }
# Through payloads/agent-daemon.sh, which looks for the request every 2 s; prints the body,
# or wget's message on stderr and fails.
rig_guest_get() {
  local share=$RIG_WORK/share _
  rm -f "$share/got" "$share/got.failed"
  echo "http://127.0.0.1:8088$1" >"$share/get.part"
  mv "$share/get.part" "$share/get"
  for _ in $(seq 60); do
    if [ -e "$share/got" ]; then
      cat "$share/got"
      return 0
    fi
    if [ -e "$share/got.failed" ]; then
      cat "$share/got.failed" >&2
      return 1
    fi
    rig_guest_alive || break
    sleep 0.5
  done
  echo "the guest did not answer the request for 127.0.0.1:8088$1" >&2
  return 1
}

# rig_die MESSAGE: fails with the ends of the controller's, the agent's and the guest's logs.
rig_die() {
  echo "vm: error: $*" >&2
  local log
  for log in controller.log share/agent.log console.log; do
    [ -s "$RIG_WORK/$log" ] || continue
    echo "--- $RIG_WORK/$log (tail)" >&2
    tail -n 25 "$RIG_WORK/$log" >&2
  done
  exit 1
}

# rig_wait WHAT SECONDS COMMAND...: polls COMMAND every half second.
rig_wait() {
  local what=$1 seconds=$2 _
  shift 2
  for _ in $(seq $((seconds * 2))); do
    "$@" >/dev/null 2>&1 && return 0
    rig_guest_alive || rig_die "the guest stopped while waiting for $what"
    sleep 0.5
  done
  rig_die "timed out after $seconds s waiting for $what"
}
rig_guest_alive() { [ -z "${rig_guest:-}" ] || kill -0 "$rig_guest" 2>/dev/null; }

rig_start() {
  RIG_WORK=$1 RIG_CORACLE=$4
  local arch=$2 agent=$3
  vm_select_arch "$arch" || exit 2
  [ -x "$RIG_CORACLE" ] || vm_die "no controller binary at $RIG_CORACLE (cargo build -p coracle-controller)"
  [ -x "$agent" ] || vm_die "no agent binary at $agent (cross/build.sh)"
  vm_require curl curl
  vm_require python3 python3
  rm -rf "$RIG_WORK"
  mkdir -p "$RIG_WORK/payload" "$RIG_WORK/share"
  local broker tls api registry
  broker=$(rig_free_port) tls=$(rig_free_port) api=$(rig_free_port) registry=$(rig_free_port)
  RIG_APP_PORT=$(rig_free_port)
  cat >"$RIG_WORK/serve.toml" <<TOML
data_dir = "$RIG_WORK/controller"
public_host = "10.0.2.2"
[broker]
listen = "127.0.0.1:$broker"
tls_listen = "127.0.0.1:$tls"
[api]
listen = "127.0.0.1:$api"
[registry]
listen = "127.0.0.1:$registry"
# Apps use the default bridged network (the guest has nft, as Raspberry Pi OS); the
# budget benchmark's use the guest's own.
[policy]
host_network = true
TOML
  "$RIG_CORACLE" serve --config "$RIG_WORK/serve.toml" >"$RIG_WORK/controller.log" 2>&1 &
  rig_pids+=($!)
  rig_wait "the controller to listen" 60 grep -q "registry listening on" "$RIG_WORK/controller.log"
  rig_coracle device add "$RIG_DEVICE" -o "$RIG_WORK/payload/bootstrap.toml" >/dev/null

  cp "$agent" "$RIG_WORK/payload/coracle-agent"
  cp "$rig_here/payloads/agent-daemon.sh" "$RIG_WORK/payload/run.sh"
  "$rig_here/initramfs.sh" "$arch" "$RIG_WORK/initramfs.cpio" "$RIG_WORK/payload" 2>/dev/null
  rig_boot
  rig_wait "$RIG_DEVICE online" 120 rig_online
}

rig_boot() {
  rm -f "$RIG_WORK/share/stop"
  rig_boots=$((rig_boots + 1))
  RIG_BOOTED=$EPOCHREALTIME
  "$rig_here/boot.sh" -i "$RIG_WORK/initramfs.cpio" -f "tcp:127.0.0.1:$RIG_APP_PORT-:8088" \
    -D "$RIG_WORK/disk.img" -d "$RIG_WORK/share" -t 3600 "$VM_ARCH" >>"$RIG_WORK/console.log" 2>&1 &
  rig_guest=$!
  rig_wait "the agent to start in the guest" 300 rig_agent_started
}
rig_agent_started() { [ "$(grep -c CORACLE-AGENT-STARTED "$RIG_WORK/console.log")" -ge "$rig_boots" ]; }

rig_halt() {
  [ -n "${rig_guest:-}" ] || return 0
  touch "$RIG_WORK/share/stop"
  local _
  for _ in $(seq 60); do kill -0 "$rig_guest" 2>/dev/null || break; sleep 0.5; done
  kill "$rig_guest" 2>/dev/null || true
  wait "$rig_guest" 2>/dev/null || true
  rig_guest=""
}
rig_online() { rig_coracle device show "$RIG_DEVICE" | tr -d ' \n' | grep -q '"online":true'; }

rig_stop() {
  rig_halt
  local pid
  for pid in "${rig_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${rig_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rig_pids=()
}
