#!/bin/bash
# A Debian 12 root like a rented VPS's image, for tests/test_vps_install.py, which runs
# vps/moat-install in it for real (chroot, private mount/pid namespaces, network namespace with
# only loopback). Built once per machine (lib/debian-root.sh) as /opt/moat-tools/bookworm-vps.tar.zst.
# The image has what a provider's image has (systemd, openssh-server, a sources.list) but NOT the
# packages moat-install adds: their .debs and apt's lists are in its apt cache, so the script's
# `apt-get install` runs for real without network. Idempotent; run as root by `make system-deps`.
set -euo pipefail
# shellcheck source=tests/system/lib/debian-root.sh
. "$(dirname "$0")/lib/debian-root.sh"
# the image's own packages (a provider's minimal Debian 12) and the ones moat-install installs
# (compiler/render/vps_install.py PACKAGES and the extras it adds: fail2ban, python3-systemd, TOTP,
# unattended-upgrades for the updates family)
BASE="systemd systemd-sysv dbus openssh-server ca-certificates"
VPS="nftables openvpn haproxy certbot fail2ban python3-systemd libpam-google-authenticator unattended-upgrades"

provider_image() {
    local root=$1 mirror=$2
    cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
SOURCES
    echo front >"$root/etc/hostname"
    chroot "$root" apt-get update -qq
    # the .debs moat-install will install, in apt's cache (apt-get clean is not run afterwards)
    chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --download-only $VPS >/dev/null
}

debian_root bookworm-vps "$BASE" provider_image
