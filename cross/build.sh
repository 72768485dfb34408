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

# The `run` path first: agent/link/hot-text.sh names the functions of agent/link/run-path.txt
# found in a build's symbol table (profile `device`: release, unstripped) in a linker script,
# and the agent is linked with it, so that `coracle-agent run`, its shim and the container's
# init execute from a few contiguous pages (peak memory: bench_runtime). The script of the
# previous build is reused; when the new build's symbols give another script (the code
# changed), it is linked once more. The shipped copy in dist/ is then stripped.
device_build() {
  CORACLE_AGENT_LINK_SCRIPT=${1:-} cross_zigbuild zigbuild --profile device -p coracle-agent \
    --bin coracle-agent --target "$CROSS_ZIG_TARGET" "${cargo_args[@]}" >&2
}
cargo_args=("$@")
built="$target_dir/$CROSS_TRIPLE/device/coracle-agent"
link_script="$target_dir/$CROSS_TRIPLE/device/coracle-agent-run-path.ld"
cross_log "building coracle-agent for $CROSS_ZIG_TARGET"
if [ ! -s "$link_script" ]; then
  device_build ""
  "$here/../agent/link/hot-text.sh" "$built" "$link_script"
fi
device_build "$link_script"
[ -x "$built" ] || cross_die "cargo reported success but $built is missing"
"$here/../agent/link/hot-text.sh" "$built" "$link_script.new"
if cmp -s "$link_script.new" "$link_script"; then
  rm "$link_script.new"
else
  cross_log "the run path's functions changed: linking again"
  mv "$link_script.new" "$link_script"
  device_build "$link_script"
fi
dist="$target_dir/$CROSS_TRIPLE/device/dist"
mkdir -p "$dist"
bin="$dist/coracle-agent"
sysroot=$(rustc --print sysroot)
# rust-objcopy (llvm-objcopy, every architecture) comes with rustc; its libLLVM is in the sysroot.
LD_LIBRARY_PATH="$sysroot/lib" \
  "$sysroot/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/rust-objcopy" \
  --strip-all "$built" "$bin"

"$here/check-binary.sh" "$arch" "$bin" >&2
readelf -SW "$bin" | grep -q '\.text\.coracle_run_path' ||
  cross_die "$bin has no .text.coracle_run_path section: the run path was not linked first"

# The device bundle: the binary plus what install.sh needs beside it, one file to copy.
bundle="$dist/coracle-agent-$arch.tar.gz"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/coracle-agent-$arch"
cp "$bin" "$here/install.sh" "$here/coracle-agent.service" "$here/check-memory-cgroup.sh" \
  "$stage/coracle-agent-$arch/"
tar -C "$stage" --owner=0 --group=0 -czf "$bundle" "coracle-agent-$arch"
cross_log "device bundle: $bundle ($(stat -c %s "$bundle") bytes)"
echo "$bin"
