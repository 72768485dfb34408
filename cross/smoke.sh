#!/usr/bin/env bash
# Smoke run of a built agent on its target (under qemu-user for ARM):
#
#   cross/smoke.sh aarch64|armv7|x86_64 BINARY
#
# Runs what the binary offers today and says what it skipped:
#  1. `--version` prints "coracle-agent <version>";
#  2. `--help` lists the subcommands; each one's `--help` must run;
#  3. config validation, when a check-config/validate-config/validate subcommand exists:
#     `SUB --config FILE` accepts the agent.toml that install.sh writes and refuses a config
#     with an unknown key;
#  4. `apply-delta` rebuilds a fixture layer from a delta, digest checked, and refuses a
#     truncated delta.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cross/targets.sh
. "$here/targets.sh"

say() { echo "smoke: $*"; }
fail() {
  echo "smoke: FAIL: $*" >&2
  exit 1
}
[ $# -eq 2 ] || fail "usage: cross/smoke.sh aarch64|armv7|x86_64 BINARY"
cross_select_target "$1" || exit 2
bin=$2
[ -x "$bin" ] || fail "$bin: not an executable file"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
say "running $bin${CROSS_QEMU:+ under $CROSS_QEMU}"

# 1. version
version=$(cross_run "$bin" --version) || fail "--version exited non-zero"
[[ "$version" =~ ^coracle-agent\ [0-9] ]] || fail "--version printed '$version'"
say "ok: --version: $version"

# 2. subcommands listed by --help (clap's "Commands:" block)
help=$(cross_run "$bin" --help) || fail "--help exited non-zero"
mapfile -t subcommands < <(awk '/^Commands:/ { inside = 1; next }
  inside && /^[^ ]/ { inside = 0 }
  inside && NF { print $1 }' <<<"$help" | grep -vx help || true)
if [ ${#subcommands[@]} -eq 0 ]; then
  say "ok: --help runs; it lists no subcommands yet"
else
  say "ok: --help lists subcommands: ${subcommands[*]}"
  for sub in "${subcommands[@]}"; do
    cross_run "$bin" "$sub" --help >/dev/null || fail "'$sub --help' exited non-zero"
  done
  say "ok: '<subcommand> --help' runs for each of them"
fi
has() {
  local sub
  for sub in "${subcommands[@]}"; do [ "$sub" = "$1" ] && return 0; done
  return 1
}

# 3. config validation
check=""
for candidate in check-config validate-config validate; do
  if has "$candidate"; then
    check=$candidate
    break
  fi
done
if [ -z "$check" ]; then
  say "skip: config validation (no check-config, validate-config or validate subcommand in --help)"
else
  root="$scratch/root"
  mkdir "$root"
  "$here/install.sh" --root "$root" --no-enable "$bin" "$here/testdata/bootstrap.toml" >/dev/null
  config="$root/etc/coracle/agent.toml"
  # Point the absolute paths install.sh writes into the scratch root.
  sed -i "s|\"/etc/coracle/|\"$root/etc/coracle/|; s|\"/var/lib/coracle\"|\"$root/var/lib/coracle\"|" "$config"
  out=$(cross_run "$bin" "$check" --config "$config" 2>&1) ||
    fail "'$check' refused the config install.sh writes: $out"
  say "ok: '$check --config agent.toml' accepts the installed config"
  cp "$config" "$scratch/bad.toml"
  echo 'no_such_setting = 1' >>"$scratch/bad.toml"
  if out=$(cross_run "$bin" "$check" --config "$scratch/bad.toml" 2>&1); then
    fail "'$check' accepted a config with an unknown key"
  fi
  grep -q no_such_setting <<<"$out" || fail "'$check' refusal does not name the bad key: $out"
  say "ok: '$check' refuses an unknown key and names it"
fi

# 4. delta apply on a small fixture (cross/testdata/delta: old.tar.gz is the old layer, delta.tar.zst
# was made from it and new.tar.gz with `coracle image delta create --from old.tar --to new.tar`,
# new.diff_id is the new layer's sha256; its README says how to regenerate the delta when the
# delta format changes): the agent unpacks the old layer as a pull would and
# rebuilds the new one; the digests must match.
if has apply-delta; then
  fixture="$here/testdata/delta"
  out=$(cross_run "$bin" apply-delta --from-tar "$fixture/old.tar.gz" "$fixture/delta.tar.zst" \
    -o "$scratch/new.tar" 2>&1) || fail "apply-delta failed: $out"
  want=$(cat "$fixture/new.diff_id")
  got="sha256:$(sha256sum "$scratch/new.tar" | cut -d' ' -f1)"
  [ "$got" = "$want" ] || fail "apply-delta rebuilt $got, expected $want"
  grep -q "$want" <<<"$out" || fail "apply-delta did not report the digest: $out"
  # A corrupted delta must be refused and leave no output behind.
  head -c 200 "$fixture/delta.tar.zst" >"$scratch/cut.delta"
  if out=$(cross_run "$bin" apply-delta --from-tar "$fixture/old.tar.gz" "$scratch/cut.delta" \
    -o "$scratch/bad.tar" 2>&1); then
    fail "apply-delta accepted a truncated delta"
  fi
  [ ! -e "$scratch/bad.tar" ] || fail "a refused delta left $scratch/bad.tar behind"
  say "ok: apply-delta rebuilds the fixture layer ($want) and refuses a truncated delta"
else
  fail "the agent has no apply-delta subcommand"
fi
