#!/usr/bin/env bash
# Tests cross/install.sh and cross/check-memory-cgroup.sh in scratch roots, and verifies the
# systemd unit with systemd-analyze when it is available:
#
#   cross/test-install.sh [BINARY [BUNDLE]]
#
# BINARY defaults to any ELF (/bin/true); BUNDLE is a coracle-agent-ARCH.tar.gz from
# build.sh, whose install.sh is then run from the unpacked bundle. .ci/cross-check passes
# the aarch64 agent and its bundle.
#
# Prints one line per case; exits non-zero at the first failed expectation.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
binary=${1:-/bin/true}
bundle=${2:-}
install_sh="$here/install.sh"
bootstrap="$here/testdata/bootstrap.toml"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

fail() {
  echo "test-install: FAIL: $*" >&2
  exit 1
}
ok() { echo "test-install: ok: $*"; }
mode_of() { stat -c %a "$1"; }
expect_mode() { [ "$(mode_of "$1")" = "$2" ] || fail "$1 has mode $(mode_of "$1"), want $2"; }
# Runs install.sh expecting failure with MESSAGE on stderr and no file written under ROOT.
expect_refusal() {
  local message=$1 root=$2
  shift 2
  local out
  if out=$("$install_sh" --root "$root" "$@" 2>&1); then fail "accepted: $*"; fi
  grep -qF "$message" <<<"$out" || fail "for '$*' wanted '$message', got: $out"
  [ -z "$(ls -A "$root")" ] || fail "refused install of '$*' still wrote: $(ls -A "$root")"
}

# 1. fresh install
root="$scratch/fresh"
mkdir "$root"
"$install_sh" --root "$root" "$binary" "$bootstrap" >"$scratch/log"
cmp -s "$binary" "$root/usr/local/bin/coracle-agent" || fail "binary not copied"
expect_mode "$root/usr/local/bin/coracle-agent" 755
cmp -s "$bootstrap" "$root/etc/coracle/bootstrap.toml" || fail "bootstrap not copied"
expect_mode "$root/etc/coracle/bootstrap.toml" 600
expect_mode "$root/var/lib/coracle" 700
grep -qx 'bootstrap = "/etc/coracle/bootstrap.toml"' "$root/etc/coracle/agent.toml" ||
  fail "agent.toml does not reference the bootstrap file"
grep -qx 'data_dir = "/var/lib/coracle"' "$root/etc/coracle/agent.toml" ||
  fail "agent.toml does not set data_dir"
cmp -s "$here/coracle-agent.service" "$root/etc/systemd/system/coracle-agent.service" ||
  fail "unit not installed"
if command -v systemctl >/dev/null; then
  [ -L "$root/etc/systemd/system/multi-user.target.wants/coracle-agent.service" ] ||
    fail "unit not enabled in the scratch root"
fi
[ -z "$(find "$root" -name '.*.new')" ] || fail "temporary files left behind"
ok "fresh install: files, modes, agent.toml, unit enabled"

# 2. same input again: nothing changes, no backup made
before=$(cd "$root" && find . -type f -exec sha256sum {} + | sort)
"$install_sh" --root "$root" "$binary" "$bootstrap" >"$scratch/log"
after=$(cd "$root" && find . -type f -exec sha256sum {} + | sort)
[ "$before" = "$after" ] || fail "reinstall with the same input changed files"
[ ! -e "$root/etc/coracle/bootstrap.toml.previous" ] || fail "needless bootstrap backup"
ok "reinstall is idempotent"

# 3. an operator's edit of agent.toml survives; a new bootstrap keeps the old one aside
echo 'data_dir = "/srv/coracle"' >"$root/etc/coracle/agent.toml"
sed 's/pi-kitchen-1/pi-kitchen-2/g' "$bootstrap" >"$scratch/new-bootstrap.toml"
"$install_sh" --root "$root" "$binary" "$scratch/new-bootstrap.toml" >"$scratch/log"
grep -qx 'data_dir = "/srv/coracle"' "$root/etc/coracle/agent.toml" || fail "agent.toml edit lost"
cmp -s "$scratch/new-bootstrap.toml" "$root/etc/coracle/bootstrap.toml" || fail "new bootstrap not installed"
cmp -s "$bootstrap" "$root/etc/coracle/bootstrap.toml.previous" || fail "old bootstrap not kept"
expect_mode "$root/etc/coracle/bootstrap.toml.previous" 600
ok "re-enrolment keeps agent.toml edits and the previous bootstrap (0600)"

# 4. bad input is refused before anything is written
bad="$scratch/bad"
mkdir "$bad"
expect_refusal "bootstrap $scratch/missing.toml: no such file" "$bad" "$binary" "$scratch/missing.toml"
expect_refusal "not a regular file" "$bad" "$binary" "$scratch"
printf 'broker_url = "mqtt://x:1883"\n' >"$scratch/no-device.toml"
expect_refusal "no 'device = \"...\"' line" "$bad" "$binary" "$scratch/no-device.toml"
expect_refusal "not an ELF executable" "$bad" "$bootstrap" "$bootstrap"
expect_refusal "binary $scratch/nope: no such file" "$bad" "$scratch/nope" "$bootstrap"
expect_refusal "unknown option '--frobnicate'" "$bad" --frobnicate "$binary" "$bootstrap"
expect_refusal "usage:" "$bad" "$binary"
ok "bad input refused with a named reason, nothing written"

# 5. the memory cgroup check: disabled (v1 and v2) is explained with the cmdline.txt to edit
fake="$scratch/kernel"
mkdir -p "$fake/v2" "$fake/boot/firmware"
printf '#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t1\t1\nmemory\t0\t1\t0\n' >"$fake/cgroups"
touch "$fake/boot/firmware/cmdline.txt"
if out=$(CORACLE_PROC_CGROUPS="$fake/cgroups" CORACLE_CGROUP_FS="$fake/none" \
  "$here/check-memory-cgroup.sh" "$fake"); then fail "v1 memory disabled not detected"; fi
grep -qF 'cgroup_enable=memory cgroup_memory=1' <<<"$out" || fail "no cmdline advice: $out"
grep -qF "$fake/boot/firmware/cmdline.txt" <<<"$out" || fail "wrong cmdline.txt: $out"
echo 'cpuset cpu io pids' >"$fake/v2/cgroup.controllers"
if CORACLE_CGROUP_FS="$fake/v2" "$here/check-memory-cgroup.sh" "$fake" >/dev/null; then
  fail "v2 memory disabled not detected"
fi
echo 'cpuset cpu io memory pids' >"$fake/v2/cgroup.controllers"
CORACLE_CGROUP_FS="$fake/v2" "$here/check-memory-cgroup.sh" "$fake" >/dev/null ||
  fail "v2 memory enabled reported as disabled"
ok "memory cgroup check: v1 and v2, disabled and enabled"

# 6. the unit passes systemd-analyze verify (ExecStart pointed at the scratch install, since
# verify insists the program exists; any warning counts as a failure)
if command -v systemd-analyze >/dev/null; then
  unit="$scratch/coracle-agent.service"
  sed "s|^ExecStart=/usr/local/bin/|ExecStart=$root/usr/local/bin/|" \
    "$here/coracle-agent.service" >"$unit"
  out=$(systemd-analyze verify --man=no "$unit" 2>&1) || fail "systemd-analyze verify: $out"
  [ -z "$out" ] || fail "systemd-analyze verify warned: $out"
  ok "systemd-analyze verify coracle-agent.service: clean"
else
  echo "test-install: skip: systemd-analyze not installed (Debian package: systemd)"
fi

# 7. the device bundle is self-contained: its install.sh works from the unpacked directory
if [ -n "$bundle" ]; then
  tar -C "$scratch" -xzf "$bundle"
  unpacked=$(find "$scratch" -maxdepth 1 -type d -name 'coracle-agent-*' | head -n1)
  [ -n "$unpacked" ] || fail "bundle $bundle has no coracle-agent-ARCH directory"
  broot="$scratch/bundle-root"
  mkdir "$broot"
  "$unpacked/install.sh" --root "$broot" "$unpacked/coracle-agent" "$bootstrap" >"$scratch/log"
  cmp -s "$unpacked/coracle-agent" "$broot/usr/local/bin/coracle-agent" || fail "bundle binary not installed"
  [ -f "$broot/etc/systemd/system/coracle-agent.service" ] || fail "bundle unit not installed"
  ok "device bundle $(basename "$bundle") installs from its own directory"
else
  echo "test-install: skip: no device bundle given"
fi
