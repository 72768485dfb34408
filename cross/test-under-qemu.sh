#!/usr/bin/env bash
# Runs the unit tests of the device-side crates for a board target under qemu-user:
#
#   cross/test-under-qemu.sh aarch64|armv7 [extra cargo arguments, e.g. --locked]
#
# coracle-agent, coracle-images and coracle-proto: `--lib` (unit tests); coracle-proto also
# its integration tests (the wire contract must decode the same on a 32- or 64-bit ARM board).
# The runner is set through CARGO_TARGET_<TRIPLE>_RUNNER for this command only, never in a
# committed .cargo/config, so native builds are untouched.
#
# Tests marked `#[ignore = "needs root"]` are not run here: qemu-user refuses seccomp
# filters (they would apply to qemu itself) and emulates clone() with namespace flags only
# partly, so the runtime's root tests belong on a real board or the native CI run. Without
# binfmt_misc, a test that execs a target-architecture binary (itself as a shim, say) fails
# with "Exec format error"; host programs run fine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cross/targets.sh
. "$here/targets.sh"
# shellcheck source=cross/toolchain.sh
. "$here/toolchain.sh"

[ $# -ge 1 ] || cross_die "usage: cross/test-under-qemu.sh aarch64|armv7 [cargo arguments]"
arch=$1
shift
cross_select_target "$arch" || exit 2
[ -n "$CROSS_QEMU" ] || cross_die "$arch runs natively here; use plain cargo test"
emulator=${CROSS_QEMU%% *}
command -v "$emulator" >/dev/null ||
  cross_die "$emulator is missing (Debian package: qemu-user or qemu-user-static)"
cd "$here/.."

cross_ensure_toolchain "$CROSS_TRIPLE"
export "$(cross_runner_var "$CROSS_TRIPLE")=$CROSS_QEMU"

# One build for all unit tests, so dependency features unify once; then proto's integration
# tests reuse that build.
cross_log "unit tests of coracle-agent, coracle-images, coracle-proto for $CROSS_TRIPLE under $emulator"
cross_zigbuild test --target "$CROSS_ZIG_TARGET" \
  -p coracle-agent -p coracle-images -p coracle-proto --lib "$@"
cross_log "integration tests of coracle-proto for $CROSS_TRIPLE under $emulator"
cross_zigbuild test --target "$CROSS_ZIG_TARGET" -p coracle-proto --test '*' "$@"
