#!/usr/bin/env bash
# Everything the live-guest tests (pytest -m qemu) need, from nothing, on Debian (root):
#   - packages: qemu-system-x86, busybox-static, cpio, xz-utils (apt-get);
#   - a Debian amd64 kernel: the linux-image-<ABI>-amd64-unsigned package that the
#     linux-image-amd64 metapackage points at (or the newest one apt knows), fetched with
#     `apt-get download`; only boot/vmlinuz-* and qemu_fw_cfg.ko are unpacked, into
#     $PAGEWALK_LIVE_CACHE (default ~/.cache/pagewalk-live), where tools/live_guest.sh looks.
# Idempotent: a second run with everything in place only checks (no apt-get update, no download).
set -euo pipefail

CACHE=${PAGEWALK_LIVE_CACHE:-$HOME/.cache/pagewalk-live}
PKGS=(qemu-system-x86 busybox-static cpio xz-utils)
log() { echo "ci_live_setup: $*" >&2; }

updated=0
apt_update() {
    if [ $updated = 0 ]; then
        log "apt-get update"
        apt-get update -qq
        updated=1
    fi
}

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt_update
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ls "$CACHE"/boot/vmlinuz-*-amd64 >/dev/null 2>&1; then
    log "kernel present: $(ls -1 "$CACHE"/boot/vmlinuz-*-amd64 | sort -V | tail -n 1)"
    exit 0
fi

apt_update
# linux-image-amd64 depends on linux-image-<ABI>-amd64 (signed); its -unsigned twin has the same vmlinuz
abi=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: linux-image-\(.*\)-amd64$/\1/p' | head -n 1)
pkg=""
if [ -n "$abi" ] && apt-cache show "linux-image-$abi-amd64-unsigned" >/dev/null 2>&1; then
    pkg="linux-image-$abi-amd64-unsigned"
else
    pkg=$(apt-cache search --names-only '^linux-image-[0-9.]+-[0-9]+-amd64-unsigned$' | awk '{print $1}' | sort -V | tail -n 1)
fi
[ -n "$pkg" ] || { log "no linux-image-*-amd64-unsigned package in apt's lists"; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"   # apt's _apt user downloads into it
log "apt-get download $pkg"
(cd "$tmp" && apt-get download -qq "$pkg" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
deb=$(ls "$tmp"/*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || { log "download of $pkg failed"; exit 1; }
mkdir -p "$CACHE.partial"
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$CACHE.partial" --wildcards \
    './boot/vmlinuz-*' './lib/modules/*/kernel/drivers/firmware/qemu_fw_cfg.ko*'
mkdir -p "$CACHE"
cp -a "$CACHE.partial"/. "$CACHE"/
rm -rf "$CACHE.partial"
log "kernel: $(ls -1 "$CACHE"/boot/vmlinuz-*-amd64 | sort -V | tail -n 1) (from $(basename "$deb"))"
