#!/usr/bin/env bash
# Agent idle memory with real containers (issue 6 target: under 8 MB with 5 running):
# runs ./demo with release binaries and no app, measures the agent's VmRSS with no
# container, deploys the demo's app and measures the agent and its one shim, deploys five
# services (busybox httpd, each health-checked) and measures again. Prints a table. Run as
# root from the repository root:
#   benchmarks/agent_idle_rss.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=${CORACLE_DEMO_DIR:-/tmp/coracle-bench-rss}
export CORACLE_DEMO_DIR=$work CORACLE_PROFILE=release CORACLE_DEMO_APP=none
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/coracle/target}
bin=$CARGO_TARGET_DIR/release
log=$(mktemp)
./demo >"$log" 2>&1 &
demo=$!
# TERM, not INT: a background job of a non-interactive shell starts with SIGINT ignored, so
# the demo would never stop (its EXIT trap stops the agent, controller and containers).
stop() { kill -TERM "$demo" 2>/dev/null || true; wait "$demo" 2>/dev/null || true; rm -f "$log"; }
trap stop EXIT
for _ in $(seq 600); do grep -q "demo: running" "$log" && break; sleep 0.5; done
grep -q "demo: running" "$log" || { cat "$log"; echo "bench: the demo did not come up" >&2; exit 1; }
agent=$(pgrep -f -x "$bin/coracle-agent --config $work/agent.toml" | head -n 1)

kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
shims() { for f in "$work"/run/*/state.json; do [ -f "$f" ] || continue; grep -o '"shim_pid":[0-9]*' "$f" | cut -d: -f2; done; }
measure() { # label
  sleep 20 # settle: a few health checks and samples
  local total=0 n=0 pid
  for pid in $(shims); do total=$((total + $(kb "$pid" VmRSS))); n=$((n + 1)); done
  printf '%-22s %10s %10s %8s %14s\n' "$1" "$(kb "$agent" VmRSS)" "$(kb "$agent" RssAnon)" "$n" \
    "$((n > 0 ? total / n : 0))"
}
deployed() { # generation, containers
  local _
  for _ in $(seq 240); do
    "$bin/coracle" device show demo-pi --data-dir "$work/controller" | tr -d ' \n' |
      grep -q "\"applied\":$1," && [ "$(shims | wc -l)" -eq "$2" ] && return 0
    sleep 0.5
  done
  echo "bench: generation $1 with $2 containers did not come up" >&2
  exit 1
}
printf '%-22s %10s %10s %8s %14s\n' "containers" "agent kB" "anon kB" "shims" "kB per shim"
measure "0"

"$bin/coracle" deploy examples/hello/compose.yml --device demo-pi --data-dir "$work/controller" >/dev/null
deployed 1 1
measure "1 (the demo's app)"

compose=$work/five.yml
{
  echo "services:"
  for i in 1 2 3 4 5; do
    cat <<YAML
  web$i:
    image: hello:1
    command: ["/bin/busybox", "httpd", "-f", "-p", "809$i", "-h", "/www"]
    ports: ["127.0.0.1:809$i:809$i"]
    mem_limit: 16m
    restart: always
    healthcheck:
      test: ["HTTP", "809$i", "/"]
      interval: 10s
YAML
  done
} >"$compose"
"$bin/coracle" deploy "$compose" --device demo-pi --data-dir "$work/controller" >/dev/null
deployed 2 5
measure "5"
