# shellcheck shell=bash
# Shared by profile-run-path.sh and hot-text.sh: a binary's function symbols as
# "MANGLED<TAB>KEY" lines, where KEY is the demangled name without a legacy hash suffix
# (`::h0123456789abcdef`), so it names the same function in the next build.
function_symbols() {
  paste <(nm -p --defined-only "$1" | awk '$2 ~ /^[tTwW]$/ {print $3}') \
        <(nm -p --defined-only -C "$1" | awk '$2 ~ /^[tTwW]$/ {sub(/^[^ ]+ [^ ]+ /, ""); print}') |
    sed -E 's/::h[0-9a-f]{16}$//'
}
