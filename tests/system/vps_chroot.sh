#!/bin/bash
# A Debian 12 root like a rented VPS's image, for tests/test_vps_install.py, which runs
# vps/moat-install in it for real (chroot, private mount/pid namespaces, network namespace with
# only loopback). Built once per machine with debootstrap from the mirror of apt's sources:
#   /opt/moat-tools/bookworm-vps.tar.zst    the root (numeric owners, device nodes)
#   /opt/moat-tools/bookworm-vps.key        sha256 of this file: a changed recipe builds it again
# The image has what a provider's image has (systemd, openssh-server, a sources.list) but NOT the
# packages moat-install adds: their .debs and apt's lists are in its apt cache, so the script's
# `apt-get install` runs for real without network. Idempotent; run as root by `make system-deps`.
set -euo pipefail
out=${MOAT_VPS_IMAGE_DIR:-/opt/moat-tools}
image=$out/bookworm-vps.tar.zst
stamp=$out/bookworm-vps.key
# the image's own packages (a provider's minimal Debian 12) and the ones moat-install installs
# (compiler/render/vps_install.py PACKAGES and the extras it adds: fail2ban, python3-systemd, TOTP)
BASE="systemd systemd-sysv dbus openssh-server ca-certificates"
VPS="nftables openvpn haproxy certbot fail2ban python3-systemd libpam-google-authenticator"
key=$(sha256sum "$0" | cut -d' ' -f1)
if [ -s "$image" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$key" ]; then
    exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "vps_chroot.sh: run as root (make system-deps)" >&2; exit 1; }
# the Debian mirror this machine uses (deb822 or one-line sources)
mirror=$(sed -n 's/^URIs: *\(\S*\/debian\)$/\1/p; s/^deb \+\(\[[^]]*\] \+\)\?\(\S*\/debian\) .*/\2/p' \
    /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null | head -n 1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
security=${mirror%/debian}/debian-security
echo "vps_chroot.sh: building $image from $mirror"
work=$(mktemp -d /var/tmp/moat-vps-chroot.XXXXXX)
root=$work/root
cleanup() {
    for m in "$root/proc" "$root/dev"; do
        if mountpoint -q "$m" 2>/dev/null; then umount -l "$m"; fi
    done
    rm -rf "$work"
}
trap cleanup EXIT
debootstrap --variant=minbase --include="${BASE// /,}" bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
SOURCES
echo front >"$root/etc/hostname"
mount --bind /dev "$root/dev"
mount -t proc proc "$root/proc"
cp /etc/resolv.conf "$root/etc/resolv.conf"
chroot "$root" apt-get update -qq
# the .debs moat-install will install, in apt's cache (apt-get clean is not run afterwards)
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --download-only $VPS >/dev/null
: >"$root/etc/resolv.conf"
umount "$root/proc" "$root/dev"
mkdir -p "$out"
tar --numeric-owner --xattrs -C "$root" -c . | zstd -q -T0 -3 -o "$work/image.tar.zst"
mv -f "$work/image.tar.zst" "$image"
echo "$key" >"$stamp"
du -h "$image"
