#!/usr/bin/env bash
# Controller memory under 1,000 idle half-open connections (issue 17). For each case a fresh
# `coracle serve` on loopback port-0 listeners, caps above 1,000 and timeouts of 60 s (so the
# connections stay open while measured): VmRSS idle, then with 1,000 connections held open,
# then after they closed. Cases: half a request head on the API; silent sockets on the
# broker's TLS port (handshake never started). Prints a table. Run from the repository root
# after a build:
#   benchmarks/controller_idle_conns.sh            # debug build; CORACLE_PROFILE=release
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/coracle/target}
bin=$CARGO_TARGET_DIR/${CORACLE_PROFILE:-debug}/coracle
count=1000
work=$(mktemp -d)
pid=
stop() { [ -n "$pid" ] && { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }; pid=; }
trap 'stop; rm -rf "$work"' EXIT

start() {
  rm -rf "$work/data"
  cat >"$work/coracle.toml" <<TOML
data_dir = "$work/data"
[broker]
listen = "127.0.0.1:0"
tls_listen = "127.0.0.1:0"
handshake_timeout_s = 60
max_connections = 1100
max_connections_per_ip = 1100
[api]
listen = "127.0.0.1:0"
max_connections = 1100
max_connections_per_ip = 1100
header_timeout_s = 60
[registry]
listen = "127.0.0.1:0"
TOML
  RUST_LOG=warn prlimit --nofile=8192:8192 "$bin" serve --config "$work/coracle.toml" >"$work/out" 2>"$work/err" &
  pid=$!
  for _ in $(seq 300); do grep -q "^registry listening" "$work/out" && break; sleep 0.1; done
  grep -q "^registry listening" "$work/out" || { cat "$work/err"; echo "bench: controller did not start" >&2; exit 1; }
  sleep 2 # settle: republish, first ticks
}
addr() { awk -v w="$1 listening on" 'index($0, w) == 1 { print $NF }' "$work/out"; }
kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$pid/status"; }
fds() { ls "/proc/$pid/fd" | wc -l; }

case_() { # label listener payload
  start
  local idle_rss idle_fds held_rss held_fds holder
  idle_rss=$(kb VmRSS) idle_fds=$(fds)
  python3 - "$(addr "$2")" "$3" "$count" >/dev/null <<'PY' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
payload = sys.argv[2].encode()
socks = []
for _ in range(int(sys.argv[3])):
    s = socket.create_connection((host, int(port)))
    if payload:
        s.sendall(payload)
    socks.append(s)
time.sleep(120)
PY
  holder=$!
  for _ in $(seq 600); do [ "$(fds)" -ge $((idle_fds + count)) ] && break; sleep 0.1; done
  sleep 2 # let every connection task reach its wait
  held_rss=$(kb VmRSS) held_fds=$(fds)
  kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true
  for _ in $(seq 300); do [ "$(fds)" -le $((idle_fds + 5)) ] && break; sleep 0.1; done
  printf '%-30s %9s %9s %9s %7s %8s\n' "$1" "$idle_rss" "$held_rss" "$(kb VmRSS)" "$held_fds" \
    "$(( (held_rss - idle_rss) * 1024 / count ))"
  stop
}

printf '%-30s %9s %9s %9s %7s %8s\n' "$count connections" "idle kB" "held kB" "after kB" "fds" "B/conn"
case_ "half-open HTTP (API)" api $'GET /metrics HTTP/1.1\r\nHost: x\r\n'
case_ "silent TLS sockets (broker)" "broker tls" ""
