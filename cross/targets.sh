# shellcheck shell=bash disable=SC2034 # the variables are read by the scripts that source this
# The board targets cross/ builds, in one table: sourced by build.sh, test-under-qemu.sh and
# smoke.sh so the triple, the promise checked on the binary and the emulator never disagree.

# Oldest glibc the armv7 binary may need: Raspberry Pi OS Buster (the oldest 32-bit release
# still met in fleets) ships 2.28. zig links against exactly this version's symbols.
CROSS_ARMV7_GLIBC=2.28

# Sets for ARCH: CROSS_TRIPLE (rustup target, target/ subdir), CROSS_ZIG_TARGET (what
# `cargo zigbuild --target` gets), CROSS_FILE_ARCH (what `file` prints for the machine),
# CROSS_LINKAGE (static | glibc), CROSS_QEMU (emulator command, empty when native).
cross_select_target() {
  case "$1" in
    aarch64)
      CROSS_TRIPLE=aarch64-unknown-linux-musl
      CROSS_ZIG_TARGET=$CROSS_TRIPLE
      CROSS_FILE_ARCH='ARM aarch64'
      CROSS_LINKAGE=static
      CROSS_QEMU=qemu-aarch64
      ;;
    armv7)
      CROSS_TRIPLE=armv7-unknown-linux-gnueabihf
      CROSS_ZIG_TARGET=$CROSS_TRIPLE.$CROSS_ARMV7_GLIBC
      CROSS_FILE_ARCH='ARM, EABI5'
      CROSS_LINKAGE=glibc
      # The dynamic loader and libc come from Debian's libc6-armhf-cross.
      CROSS_QEMU='qemu-arm -L /usr/arm-linux-gnueabihf'
      ;;
    x86_64)
      CROSS_TRIPLE=x86_64-unknown-linux-musl
      CROSS_ZIG_TARGET=$CROSS_TRIPLE
      CROSS_FILE_ARCH='x86-64'
      CROSS_LINKAGE=static
      CROSS_QEMU=''
      ;;
    *)
      echo "unknown target '$1': expected one of aarch64, armv7, x86_64" >&2
      return 2
      ;;
  esac
}

# The cargo variable that names the program running TRIPLE's test binaries.
cross_runner_var() {
  local upper=${1^^}
  echo "CARGO_TARGET_${upper//-/_}_RUNNER"
}

# Runs a target binary: through qemu-user for foreign targets, directly otherwise.
cross_run() {
  # shellcheck disable=SC2086 # CROSS_QEMU is a command with arguments on purpose.
  $CROSS_QEMU "$@"
}
