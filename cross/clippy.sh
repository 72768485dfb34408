#!/usr/bin/env bash
# Lints the device-side crates for a board target, warnings as errors:
#
#   cross/clippy.sh aarch64|armv7|x86_64 [extra cargo arguments, e.g. --locked]
#
# A native build cannot see what only a 32-bit target gets wrong (struct stat fields that
# are u32 on armv7, usize that is 32 bits), and building armv7 in full costs minutes; this
# type-checks coracle-agent, coracle-images and coracle-proto for the target in one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cross/targets.sh
. "$here/targets.sh"
# shellcheck source=cross/toolchain.sh
. "$here/toolchain.sh"

[ $# -ge 1 ] || cross_die "usage: cross/clippy.sh aarch64|armv7|x86_64 [cargo arguments]"
arch=$1
shift
cross_select_target "$arch" || exit 2
cd "$here/.."

cross_ensure_toolchain "$CROSS_TRIPLE"
cross_log "clippy of coracle-agent, coracle-images, coracle-proto for $CROSS_TRIPLE"
cross_zigbuild clippy --target "$CROSS_ZIG_TARGET" \
  -p coracle-agent -p coracle-images -p coracle-proto --all-targets "$@" -- -D warnings >&2
