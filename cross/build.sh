#!/usr/bin/env bash
# Builds the stripped release `coracle-agent` for one board target and checks it:
#
#   cross/build.sh aarch64|armv7|x86_64 [extra cargo arguments, e.g. --locked]
#
#   aarch64  aarch64-unknown-linux-musl, fully static (Pi 3/4/5, Zero 2 W, CM4 on 64-bit OS)
#   armv7    armv7-unknown-linux-gnueabihf, glibc >= 2.28 (32-bit Raspberry Pi OS)
#   x86_64   x86_64-unknown-linux-musl, fully static (x86 gateways)
#
# Installs what is missing first (cross/toolchain.sh). zig is the C compiler and linker for
# every target, so crates that compile C (zstd-sys, ring, aws-lc-sys) need nothing else.
# Also packs the device bundle coracle-agent-ARCH.tar.gz beside the binary (binary,
# install.sh, the systemd unit, the memory-cgroup check).
# Progress goes to stderr; the one line on stdout is the path of the checked binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cross/targets.sh
. "$here/targets.sh"
# shellcheck source=cross/toolchain.sh
. "$here/toolchain.sh"

[ $# -ge 1 ] || cross_die "usage: cross/build.sh aarch64|armv7|x86_64 [cargo arguments]"
arch=$1
shift
cross_select_target "$arch" || exit 2
cd "$here/.."

cross_ensure_toolchain "$CROSS_TRIPLE"
target_dir=$(cargo metadata --no-deps --format-version 1 |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || cross_die "cargo metadata did not name the target directory"

cross_log "building coracle-agent for $CROSS_ZIG_TARGET"
# Stripping is forced here too, so the promise holds even if the release profile changes.
CARGO_PROFILE_RELEASE_STRIP=symbols \
  cross_zigbuild zigbuild --release -p coracle-agent --bin coracle-agent \
  --target "$CROSS_ZIG_TARGET" "$@" >&2
bin="$target_dir/$CROSS_TRIPLE/release/coracle-agent"
[ -x "$bin" ] || cross_die "cargo reported success but $bin is missing"

"$here/check-binary.sh" "$arch" "$bin" >&2

# The device bundle: the binary plus what install.sh needs beside it, one file to copy.
bundle="$target_dir/$CROSS_TRIPLE/release/coracle-agent-$arch.tar.gz"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/coracle-agent-$arch"
cp "$bin" "$here/install.sh" "$here/coracle-agent.service" "$here/check-memory-cgroup.sh" \
  "$stage/coracle-agent-$arch/"
tar -C "$stage" --owner=0 --group=0 -czf "$bundle" "coracle-agent-$arch"
cross_log "device bundle: $bundle ($(stat -c %s "$bundle") bytes)"
echo "$bin"
