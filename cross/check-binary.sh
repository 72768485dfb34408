#!/usr/bin/env bash
# Checks that BINARY keeps the promise of its target and prints its size:
#
#   cross/check-binary.sh aarch64|armv7|x86_64 BINARY
#
# - the machine `file` reports is the target's;
# - it is stripped;
# - static targets: statically linked, no program interpreter;
# - glibc targets: needs only glibc libraries, and no symbol version newer than the floor in
#   cross/targets.sh (so it starts on the oldest supported Raspberry Pi OS).
# Exits non-zero naming the first broken promise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cross/targets.sh
. "$here/targets.sh"

fail() {
  echo "check-binary: $bin: $*" >&2
  exit 1
}

[ $# -eq 2 ] || {
  echo "usage: cross/check-binary.sh aarch64|armv7|x86_64 BINARY" >&2
  exit 2
}
cross_select_target "$1" || exit 2
bin=$2
[ -f "$bin" ] || fail "no such file"
command -v file >/dev/null || fail "the 'file' command is missing (Debian package: file)"

kind=$(file -b "$bin")
case "$kind" in *"$CROSS_FILE_ARCH"*) ;; *) fail "not a $CROSS_FILE_ARCH binary: $kind" ;; esac
case "$kind" in *", stripped"*) ;; *) fail "not stripped: $kind" ;; esac

case "$CROSS_LINKAGE" in
  static)
    case "$kind" in
      *"statically linked"* | *"static-pie linked"*) ;;
      *) fail "promised fully static, but: $kind" ;;
    esac
    case "$kind" in *interpreter*) fail "static binary names an interpreter: $kind" ;; esac
    linkage="static"
    ;;
  glibc)
    command -v readelf >/dev/null || fail "readelf is missing (Debian package: binutils)"
    while read -r lib; do
      case "$lib" in
        libc.so.6 | libm.so.6 | libdl.so.2 | libpthread.so.0 | librt.so.1 | ld-linux*.so.*) ;;
        *) fail "needs $lib, which is not part of glibc" ;;
      esac
    done < <(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    newest=$(readelf -V "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
    floor=$CROSS_ARMV7_GLIBC
    if [ "$(printf '%s\n%s\n' "$newest" "$floor" | sort -V | tail -n1)" != "$floor" ]; then
      fail "needs glibc $newest, newer than the promised $floor"
    fi
    linkage="dynamic, glibc >= $newest"
    ;;
esac

bytes=$(stat -c %s "$bin")
kib=$(((bytes + 512) / 1024))
echo "size: coracle-agent $CROSS_TRIPLE: $bytes bytes ($kib KiB), stripped, $linkage"
