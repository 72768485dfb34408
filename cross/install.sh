#!/usr/bin/env bash
# Installs coracle-agent on a device (run as root on the board):
#
#   install.sh [--root DIR] [--no-enable] BINARY BOOTSTRAP
#
#   BINARY     the agent built by cross/build.sh for this board
#   BOOTSTRAP  the enrolment file from `coracle device add` (TOML; holds the device's secrets)
#   --root DIR install into DIR instead of / (also: DESTDIR=DIR); the unit is then enabled
#              offline with `systemctl --root`, nothing is started
#   --no-enable  install files only
#
# Writes:
#   /usr/local/bin/coracle-agent                  (0755, replaced atomically)
#   /etc/coracle/bootstrap.toml                   (0600; a different earlier one is kept as
#                                                  bootstrap.toml.previous)
#   /etc/coracle/agent.toml                       (only if absent: local edits are kept)
#   /var/lib/coracle/                             (0700, the agent's data dir)
#   /etc/systemd/system/coracle-agent.service     (then enabled and (re)started)
# and warns when the kernel has the memory cgroup controller disabled.
# Everything is checked before the first file is written, so bad input changes nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

die() {
  echo "install: error: $*" >&2
  exit 1
}
say() { echo "install: $*"; }
usage() { die "usage: install.sh [--root DIR] [--no-enable] BINARY BOOTSTRAP"; }

root=${DESTDIR:-/}
enable=yes
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --root)
      [ $# -ge 2 ] || usage
      root=$2
      shift 2
      ;;
    --root=*)
      root=${1#--root=}
      shift
      ;;
    --no-enable)
      enable=no
      shift
      ;;
    -*) die "unknown option '$1'" ;;
    *)
      args+=("$1")
      shift
      ;;
  esac
done
[ ${#args[@]} -eq 2 ] || usage
binary=${args[0]}
bootstrap=${args[1]}
root=${root%/}
unit_src="$here/coracle-agent.service"

# --- check everything first
[ -e "$binary" ] || die "binary $binary: no such file"
[ -f "$binary" ] || die "binary $binary: not a regular file"
[ "$(head -c 4 "$binary" | od -An -c | tr -d ' ')" = '177ELF' ] ||
  die "binary $binary: not an ELF executable"
if [ -z "$root" ]; then
  # On the device itself, prove the binary runs here (a wrong-architecture build fails now,
  # not at the next boot).
  "$binary" --version >/dev/null 2>&1 ||
    die "binary $binary does not run on this machine ($(uname -m)): built for another board?"
fi
[ -e "$bootstrap" ] || die "bootstrap $bootstrap: no such file"
[ -f "$bootstrap" ] || die "bootstrap $bootstrap: not a regular file"
[ -r "$bootstrap" ] || die "bootstrap $bootstrap: not readable"
grep -Eq '^[[:space:]]*device[[:space:]]*=[[:space:]]*["'\''][a-z0-9][a-z0-9-]*["'\'']' "$bootstrap" ||
  die "bootstrap $bootstrap: no 'device = \"...\"' line; is this a file from 'coracle device add'?"
[ -f "$unit_src" ] || die "systemd unit $unit_src: no such file (run install.sh from cross/)"
[ -d "${root:-/}" ] || die "root $root: no such directory"

# Copies SRC to DEST with MODE through a temporary file and a rename, so DEST is always
# either the old or the new file, never a half-written one.
put_file() {
  local src=$1 dest=$2 mode=$3 tmp
  tmp="$(dirname "$dest")/.$(basename "$dest").new"
  install -m "$mode" "$src" "$tmp"
  sync "$tmp" 2>/dev/null || true
  mv -f "$tmp" "$dest"
}

# --- directories
install -d -m 0755 "$root/usr/local/bin" "$root/etc/coracle" "$root/etc/systemd/system"
install -d -m 0700 "$root/var/lib/coracle"

# --- binary
put_file "$binary" "$root/usr/local/bin/coracle-agent" 0755
say "installed $root/usr/local/bin/coracle-agent"

# --- bootstrap (secrets: readable by root only)
conf="$root/etc/coracle"
if [ -f "$conf/bootstrap.toml" ] && cmp -s "$bootstrap" "$conf/bootstrap.toml"; then
  chmod 0600 "$conf/bootstrap.toml"
  say "kept $conf/bootstrap.toml (unchanged)"
else
  if [ -f "$conf/bootstrap.toml" ]; then
    put_file "$conf/bootstrap.toml" "$conf/bootstrap.toml.previous" 0600
    say "kept the earlier bootstrap as $conf/bootstrap.toml.previous"
  fi
  put_file "$bootstrap" "$conf/bootstrap.toml" 0600
  say "installed $conf/bootstrap.toml (mode 0600)"
fi

# --- agent config: written once; an operator's later edits win over a reinstall
if [ -f "$conf/agent.toml" ]; then
  say "kept $conf/agent.toml (already present)"
else
  tmp=$(mktemp)
  trap 'rm -f "$tmp"' EXIT
  cat >"$tmp" <<'TOML'
# coracle-agent configuration, written by cross/install.sh. Edit freely: reinstalling keeps
# this file. The secrets live in the bootstrap file (mode 0600), not here.
bootstrap = "/etc/coracle/bootstrap.toml"
data_dir = "/var/lib/coracle"
TOML
  put_file "$tmp" "$conf/agent.toml" 0644
  say "wrote $conf/agent.toml"
fi

# --- systemd unit
put_file "$unit_src" "$root/etc/systemd/system/coracle-agent.service" 0644
say "installed $root/etc/systemd/system/coracle-agent.service"
if [ "$enable" = no ]; then
  say "not enabling the service (--no-enable)"
elif ! command -v systemctl >/dev/null; then
  say "systemctl not found: enable coracle-agent.service by hand"
elif [ -n "$root" ]; then
  systemctl --root="$root" enable coracle-agent.service >/dev/null 2>&1 ||
    die "systemctl --root=$root enable coracle-agent.service failed"
  say "enabled coracle-agent.service in $root (not started: not the running system)"
elif [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable coracle-agent.service
  # restart, not start: a reinstall must run the new binary. Containers keep running
  # (the unit has KillMode=process).
  systemctl restart coracle-agent.service
  say "enabled and (re)started coracle-agent.service"
else
  say "systemd is not running here: enable coracle-agent.service by hand"
fi

# --- kernel check (warn only: the agent also detects this and reports it to the controller)
"$here/check-memory-cgroup.sh" "$root" || true
