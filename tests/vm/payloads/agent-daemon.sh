#!/bin/sh
# Guest payload: the agent daemon installed as on a board (/etc/coracle, its data dir on the
# ext4 data disk at /var/lib), enrolled with /payload/bootstrap.toml. The host drives it
# through the controller and reads back through the share (/host):
#   /host/agent.log   the agent's log
#   /host/samples     every 2 s: uptime_s agent_rss_kB disk_sectors_written containers
#                     (sectors of 512 bytes from /sys/block/vda/stat, as an SD card's wear)
#   /host/containers  every 2 s: one line per running container, `ID PID` (the host sees
#                     whether an update kept a container or started another)
#   /host/get         a URL the host wants fetched inside the guest (rig_guest_get): the
#                     body lands in /host/got, or wget's message in /host/got.failed
# It stops the agent and returns when the host creates /host/stop, or fails when the agent
# exits on its own. Bridged app networks need `nft` and nf_tables, checked first.
A=/payload/coracle-agent
mkdir -p /etc/coracle /var/lib/coracle && chmod 700 /var/lib/coracle
cp /payload/bootstrap.toml /etc/coracle/bootstrap.toml && chmod 600 /etc/coracle/bootstrap.toml
cat >/etc/coracle/agent.toml <<TOML
bootstrap = "/etc/coracle/bootstrap.toml"
data_dir = "/var/lib/coracle"
TOML
echo "agent-daemon: $($A --version)"
tables=$(nft list tables 2>&1) || {
  echo "agent-daemon: nft list tables failed: $tables"
  exit 1
}
echo "agent-daemon: $(nft --version) answers, $(echo "$tables" | grep -c '^table') tables"
$A --config /etc/coracle/agent.toml check-config || exit 1
sync
NO_COLOR=1 $A --config /etc/coracle/agent.toml >/host/agent.log 2>&1 &
agent=$!
echo "CORACLE-AGENT-STARTED pid=$agent uptime=$(cut -d' ' -f1 /proc/uptime)"
while [ ! -e /host/stop ]; do
  if ! kill -0 "$agent" 2>/dev/null; then
    wait "$agent"
    echo "agent-daemon: the agent exited with $? before the host asked it to stop"
    tail -n 20 /host/agent.log
    exit 1
  fi
  rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$agent/status")
  written=$(awk '{ print $7 }' /sys/block/vda/stat)
  containers=$(find /run/coracle -name state.json 2>/dev/null | wc -l)
  echo "$(cut -d' ' -f1 /proc/uptime) $rss $written $containers" >>/host/samples
  for state in /run/coracle/*/state.json; do
    grep -q '"status":"Running"' "$state" 2>/dev/null || continue
    echo "$(basename "$(dirname "$state")") $(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$state")"
  done >/host/containers.part
  mv /host/containers.part /host/containers
  if [ -e /host/get ]; then
    url=$(cat /host/get)
    rm -f /host/get
    # Bounded by timeout(1): busybox 1.35's static wget crashes on its own -T.
    if timeout 10 wget -q -O /host/got.part "$url" 2>/host/got.err; then
      mv /host/got.part /host/got
    else
      echo "wget $url: $(cat /host/got.err)" >/host/got.failed
    fi
  fi
  sleep 2
done
echo "agent-daemon: containers at the end: $($A --config /etc/coracle/agent.toml ps 2>&1 | tr '\n' '|')"
echo "agent-daemon: nftables tables at the end: $(nft list tables 2>&1 | tr '\n' '|')"
kill "$agent"
wait "$agent"
echo "agent-daemon: the agent stopped (status $?)"
