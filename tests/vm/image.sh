#!/usr/bin/env bash
# Writes a small OCI image layout for a guest architecture: the guest's busybox-static and a
# page for `busybox httpd` to serve:
#
#   tests/vm/image.sh arm64|armhf OUT_DIR PAGE_TEXT
#
# One layer, reproducible (sorted, owner 0, no gzip timestamp), so two versions that differ
# only in PAGE_TEXT make a small delta. Import it with
# `coracle image import OUT_DIR --tag NAME:TAG --platform linux/arm64`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/vm/lib.sh
. "$here/lib.sh"

[ $# -eq 3 ] || vm_die "usage: tests/vm/image.sh arm64|armhf OUT_DIR PAGE_TEXT"
vm_select_arch "$1" || exit 2
out=$2 page=$3
busybox=$VM_DIR/rootfs/bin/busybox
[ -x "$busybox" ] || vm_die "no $VM_ARCH busybox in $VM_DIR/rootfs: run tests/vm/fetch.sh $VM_ARCH"
case $VM_PLATFORM in
  linux/arm64) platform='"architecture":"arm64","os":"linux"' ;;
  linux/arm/v7) platform='"architecture":"arm","variant":"v7","os":"linux"' ;;
esac

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/www" "$root/tmp" "$out/blobs/sha256"
cp "$busybox" "$root/bin/busybox"
echo "$page" >"$root/www/index.html"

# put FILE: stores FILE as a blob, prints its digest (hex) and size.
put() {
  local digest
  digest=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$out/blobs/sha256/$digest"
  echo "$digest $(stat -c %s "$out/blobs/sha256/$digest")"
}
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$root.tar" .
diff_id=$(sha256sum "$root.tar" | cut -d' ' -f1)
gzip -n <"$root.tar" >"$out/layer"
rm "$root.tar"
read -r layer layer_size < <(put "$out/layer")
printf '{%s,"config":{"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$platform" "$diff_id" >"$out/config"
read -r config config_size < <(put "$out/config")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
  "$config" "$config_size" "$layer" "$layer_size" >"$out/manifest"
read -r manifest manifest_size < <(put "$out/manifest")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s}]}' \
  "$manifest" "$manifest_size" >"$out/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"
