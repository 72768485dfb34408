#!/bin/sh
# Guest payload: the agent's `needs root` test binaries, built for the guest's architecture
# and read over the share. /payload/tests.env sets:
#   TARGET_DIR  the cargo target's debug dir on the host: the share appears at that same path
#               (the tests find coracle-agent through the CARGO_BIN_EXE path built into them)
#   TESTS       "name=binary ..." (binary under TARGET_DIR/deps)
#   SKIPS       "--skip test::path ..." passed to every binary
#   SHIM        1: make /sys/fs/cgroup/unified a child cgroup, for tests that still expect
#               the hybrid layout's path there
# Prints `ROOT-TEST NAME: pass|FAIL in N s` per binary, the failing tests' output, and
# `ROOT-TESTS failed=N`; fails when any binary failed.
# shellcheck source=/dev/null # written by tests/vm/root-tests.sh
. /payload/tests.env
mkdir -p "$(dirname "$TARGET_DIR")" /var/lib/tmp
ln -s /host "$TARGET_DIR"
# Temp dirs on the ext4 data disk: tmpfs cannot be idmapped before Linux 6.3.
export TMPDIR=/var/lib/tmp RUST_BACKTRACE=0
if [ "$SHIM" = 1 ]; then
  mkdir /sys/fs/cgroup/unified &&
    echo "+cpuset +cpu +io +memory +pids" >/sys/fs/cgroup/unified/cgroup.subtree_control &&
    echo "root-tests: /sys/fs/cgroup/unified made a child cgroup (the tests' hybrid-layout path)"
fi
failed=0
for entry in $TESTS; do
  name=${entry%%=*} binary=${entry#*=}
  t0=$(cut -d' ' -f1 /proc/uptime)
  # shellcheck disable=SC2086 # SKIPS is a list of arguments
  "$TARGET_DIR/deps/$binary" --include-ignored --test-threads=1 $SKIPS >"/tmp/$name.out" 2>&1
  rc=$?
  took=$(awk -v t0="$t0" '{ printf "%.1f", $1 - t0 }' /proc/uptime)
  summary=$(grep '^test result:' "/tmp/$name.out" | tail -n 1)
  if [ $rc = 0 ]; then
    echo "ROOT-TEST $name: pass in $took s ($summary)"
  else
    failed=$((failed + 1))
    echo "ROOT-TEST $name: FAIL (status $rc) in $took s ($summary)"
    grep -vE '^test .* ok$|^$|^running' "/tmp/$name.out" | tail -n 80 | sed "s/^/  $name| /"
  fi
done
echo "ROOT-TESTS failed=$failed"
[ $failed = 0 ]
