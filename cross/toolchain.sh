# shellcheck shell=bash
# Installs the cross toolchain idempotently: the rustup target, cargo-zigbuild, and zig as
# the C compiler and linker (from PyPI's `ziglang` wheel, which is one static zig binary).
# Each step checks first and installs only what is missing. Sourced by build.sh and
# test-under-qemu.sh.

# Versions installed when missing (an existing install of any version is used as is).
CARGO_ZIGBUILD_VERSION=${CARGO_ZIGBUILD_VERSION:-0.24.1}
ZIGLANG_VERSION=${ZIGLANG_VERSION:-0.17.1}
PYTHON=${PYTHON:-python3}
# Where zig lands when pip cannot install it into the Python environment.
CORACLE_CROSS_TOOLS=${CORACLE_CROSS_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/coracle-cross}

cross_log() { echo "cross: $*" >&2; }
cross_die() {
  echo "cross: error: $*" >&2
  exit 1
}

cross_ensure_rust_target() {
  local triple=$1
  if command -v rustup >/dev/null; then
    rustup target list --installed | grep -qx "$triple" && return 0
    cross_log "adding rustup target $triple"
    rustup target add "$triple" >&2 || cross_die "rustup could not add target $triple"
  elif [ ! -d "$(rustc --print sysroot)/lib/rustlib/$triple" ]; then
    cross_die "no rustup and no standard library for $triple in $(rustc --print sysroot)"
  fi
}

# Runs cargo-zigbuild (its `zigbuild`, `test`, ... subcommands), also when cargo's bin dir
# is not on PATH, as right after a first `cargo install`.
cross_zigbuild() {
  local exe
  exe=$(command -v cargo-zigbuild) || exe="${CARGO_HOME:-$HOME/.cargo}/bin/cargo-zigbuild"
  "$exe" "$@"
}

cross_ensure_cargo_zigbuild() {
  cross_zigbuild --version >/dev/null 2>&1 && return 0
  cross_log "installing cargo-zigbuild $CARGO_ZIGBUILD_VERSION"
  # Without CARGO_TARGET_DIR cargo install builds in a temporary dir, not the project's cache.
  env -u CARGO_TARGET_DIR cargo install --locked "cargo-zigbuild@$CARGO_ZIGBUILD_VERSION" >&2 ||
    cross_die "cargo install cargo-zigbuild@$CARGO_ZIGBUILD_VERSION failed"
}

# cargo-zigbuild looks for `$PYTHON -m ziglang` first, then `zig` (or CARGO_ZIGBUILD_ZIG_PATH).
cross_ensure_zig() {
  export CARGO_ZIGBUILD_PYTHON_PATH=$PYTHON
  if "$PYTHON" -m ziglang version >/dev/null 2>&1; then return 0; fi
  local private_zig="$CORACLE_CROSS_TOOLS/ziglang-$ZIGLANG_VERSION/ziglang/zig"
  if [ -z "${CARGO_ZIGBUILD_ZIG_PATH:-}" ] && [ -x "$private_zig" ]; then
    export CARGO_ZIGBUILD_ZIG_PATH=$private_zig
  fi
  if "${CARGO_ZIGBUILD_ZIG_PATH:-zig}" version >/dev/null 2>&1; then return 0; fi

  "$PYTHON" -m pip --version >/dev/null 2>&1 ||
    cross_die "no zig found and no pip for $PYTHON: install python3-pip (Debian) or put zig on PATH"
  cross_log "installing ziglang $ZIGLANG_VERSION from PyPI into $CORACLE_CROSS_TOOLS"
  # --target installs into a private directory: it works the same for a virtualenv, pyenv
  # and Debian's externally managed system Python (PEP 668), and touches none of them.
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$CORACLE_CROSS_TOOLS/ziglang-$ZIGLANG_VERSION" "ziglang==$ZIGLANG_VERSION" >&2 ||
    cross_die "pip could not install ziglang==$ZIGLANG_VERSION"
  export CARGO_ZIGBUILD_ZIG_PATH=$private_zig
  "$CARGO_ZIGBUILD_ZIG_PATH" version >/dev/null || cross_die "zig at $private_zig does not run"
}

# Everything `cargo zigbuild --target TRIPLE` needs.
cross_ensure_toolchain() {
  cross_ensure_rust_target "$1"
  cross_ensure_zig
  cross_ensure_cargo_zigbuild
}
