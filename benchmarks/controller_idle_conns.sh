#!/usr/bin/env bash
# Controller memory under 1,000 idle half-open connections (issue 17): starts `coracle serve`
# on loopback port-0 listeners with caps above 1,000, measures its VmRSS idle, with 1,000
# connections that sent half a request head to the API, and with 1,000 silent sockets on the
# broker's TLS port (the timeouts are raised to 60 s so they stay open while measured).
# Prints a table. Run from the repository root after a build:
#   benchmarks/controller_idle_conns.sh            # debug build; CORACLE_PROFILE=release
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/coracle/target}
bin=$CARGO_TARGET_DIR/${CORACLE_PROFILE:-debug}/coracle
work=$(mktemp -d)
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
stop() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap stop EXIT
for _ in $(seq 200); do grep -q "^registry listening" "$work/out" && break; sleep 0.1; done
addr() { awk -v w="$1 listening on" 'index($0, w) == 1 { print $NF }' "$work/out"; }
api=$(addr api)
tls=$(addr "broker tls")
[ -n "$api" ] && [ -n "$tls" ] || { cat "$work/err"; echo "bench: controller did not start" >&2; exit 1; }

kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$pid/status"; }
fds() { ls "/proc/$pid/fd" | wc -l; }
row() { printf '%-34s %8s %8s %6s\n' "$1" "$(kb VmRSS)" "$(kb RssAnon)" "$(fds)"; }
# Opens N connections to host:port, optionally sends a prefix, waits until the controller
# holds them (its descriptor count grew by N), prints the row, and keeps them until stdin
# closes.
hold() { # label addr payload
  local holder before
  before=$(fds)
  python3 - "$2" "$3" >/dev/null <<'PY' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
payload = sys.argv[2].encode()
socks = []
for _ in range(1000):
    s = socket.create_connection((host, int(port)))
    if payload:
        s.sendall(payload)
    socks.append(s)
print("open", flush=True)
time.sleep(30)
PY
  holder=$!
  for _ in $(seq 300); do [ "$(fds)" -ge $((before + 900)) ] && break; sleep 0.1; done
  sleep 2 # let the per-connection tasks reach their wait
  row "$1"
  kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true
  for _ in $(seq 300); do [ "$(fds)" -le $((before + 10)) ] && break; sleep 0.1; done
}

printf '%-34s %8s %8s %6s\n' "state" "RSS kB" "anon kB" "fds"
sleep 2
row "idle, no connections"
hold "1,000 half-open HTTP (API)" "$api" $'GET /metrics HTTP/1.1\r\nHost: x\r\n'
hold "1,000 silent TLS sockets (broker)" "$tls" ""
row "after both closed"
