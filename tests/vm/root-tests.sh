#!/usr/bin/env bash
# The agent's `needs root` integration tests in a guest, on Debian's kernel with cgroup v2
# only: test binaries built for the guest (`cargo zigbuild test --no-run` for aarch64-musl),
# their target dir shared over 9p, each run with --include-ignored, one test at a time.
#
#   tests/vm/root-tests.sh [-s TEST_PATH]... [-u] arm64|armhf TARGET_DEBUG_DIR TEST_NAME...
#     -s TEST_PATH  skip this test (a test binary's --skip), repeatable
#     -u            make /sys/fs/cgroup/unified a child cgroup for tests that still expect
#                   the hybrid layout's path
#
# Prints one line per test binary (pass or FAIL, time) and the failing tests' output; exits
# 1 when any failed. The console log: $CORACLE_VM_WORK/root-tests-ARCH/console.log
# (default /tmp/coracle-vm).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/vm/lib.sh
. "$here/lib.sh"

skips=() shim=0
while getopts "s:u" opt; do
  case $opt in
    s) skips+=(--skip "$OPTARG") ;;
    u) shim=1 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 3 ] || vm_die "usage: tests/vm/root-tests.sh [-s TEST]... [-u] arm64|armhf TARGET_DEBUG_DIR TEST_NAME..."
vm_select_arch "$1" || exit 2
target_dir=$(cd "$2" && pwd) || vm_die "no target dir $2"
shift 2
[ -x "$target_dir/coracle-agent" ] || vm_die "no coracle-agent in $target_dir: build the tests with --no-run first"

tests=()
for name in "$@"; do
  # The newest build of that test (cargo keeps older ones beside it).
  binary=$(find "$target_dir/deps" -maxdepth 1 -type f -executable -name "$name-*" -printf '%T@ %f\n' |
    sort -n | tail -n 1 | cut -d' ' -f2)
  [ -n "$binary" ] || vm_die "no test binary $name in $target_dir/deps: build it with --no-run (--test $name)"
  tests+=("$name=$binary")
done

work=${CORACLE_VM_WORK:-/tmp/coracle-vm}/root-tests-$VM_ARCH
rm -rf "$work"
mkdir -p "$work/payload"
cp "$here/payloads/root-tests.sh" "$work/payload/run.sh"
cat >"$work/payload/tests.env" <<ENV
TARGET_DIR='$target_dir'
TESTS='${tests[*]}'
SKIPS='${skips[*]}'
SHIM=$shim
ENV
"$here/initramfs.sh" "$VM_ARCH" "$work/initramfs.cpio" "$work/payload" 2>/dev/null
rc=0
"$here/boot.sh" -i "$work/initramfs.cpio" -D "$work/disk.img" -d "$target_dir" -t 1800 "$VM_ARCH" \
  >"$work/console.log" 2>&1 || rc=$?
sed -n 's/^\[ *[0-9.]*\] //; /^ROOT-TEST\|^  [a-z_]*| \|^root-tests:/p' "$work/console.log"
if [ "$rc" != 0 ]; then
  if ! grep -q '^\[.*\] ROOT-TESTS failed=' "$work/console.log"; then
    echo "root-tests: the $VM_ARCH guest ended before the tests did (status $rc); console tail ($work/console.log):"
    tail -n 40 "$work/console.log"
  fi
  exit 1
fi
rm -f "$work/disk.img"
