#!/usr/bin/env bash
# Regenerates run-path.txt: the functions `coracle-agent run` executes — in the foreground
# process, the shim it forks and the container init up to its execve — recorded with
# valgrind's callgrind on a busybox bundle made with `crun spec`. Run as root by hand after
# the run path changes much (a stale list only costs memory: unmatched names are skipped).
#
#   agent/link/profile-run-path.sh BINARY
#
# BINARY: a release build with its symbol table, e.g. target/release/coracle-agent.
# Needs: valgrind, crun, busybox-static (Debian packages).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=agent/link/symbols.sh
. "$here/symbols.sh"
binary=$(realpath "${1:?usage: profile-run-path.sh BINARY}")
[ "$(id -u)" = 0 ] || { echo "profile-run-path: run as root (containers)" >&2; exit 1; }
work=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
bundle=$work/bundle
mkdir -p "$bundle/rootfs/bin"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
ln -s busybox "$bundle/rootfs/bin/true"
crun spec -b "$bundle"
# As the benchmark's bundle, but writable (callgrind writes the init's profile inside it) and
# with the file limit swapped for another one: valgrind refuses any change of RLIMIT_NOFILE.
sed -i -e 's/"terminal": true/"terminal": false/' -e 's/"sh"/"\/bin\/true"/' \
  -e 's/"readonly": true/"readonly": false/' -e 's/RLIMIT_NOFILE/RLIMIT_NPROC/' "$bundle/config.json"
# The init's profile lands at the same path inside the container's root.
out=$work/profiles
mkdir -p "$out" "$bundle/rootfs$out"
profile() {
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$out/callgrind.%p" \
    --trace-children=yes --trace-children-skip='/bin/*,/nonexistent' \
    "$binary" run --bundle "$bundle" --root "$work/state" "$1" >/dev/null 2>"$work/$1.log" || true
}
profile coracle-profile-ok
# An init that cannot exec exits through the runtime's code and so writes its profile.
sed -i 's/"\/bin\/true"/"\/nonexistent"/' "$bundle/config.json"
profile coracle-profile-init
cat "$out"/callgrind.* "$bundle/rootfs$out"/callgrind.* |
  sed -nE 's/^c?fn=\([0-9]+\) (.*)/\1/p' | sort -u >"$work/executed"
{
  echo "# Functions executed by \`coracle-agent run\` (foreground, shim, init), demangled without"
  echo "# hashes; made by agent/link/profile-run-path.sh, used by agent/link/hot-text.sh."
  function_symbols "$binary" |
    awk -F'\t' 'NR == FNR { run[$0] = 1; next } ($1 in run) { print $2 }' "$work/executed" - |
    LC_ALL=C sort -u
} >"$here/run-path.txt"
echo "profile-run-path: $(grep -vc '^#' "$here/run-path.txt") functions -> $here/run-path.txt" >&2
