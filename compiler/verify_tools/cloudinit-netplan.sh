#!/bin/sh
# moat validator: `netplan generate` on a generated cloud-init network-config (version 2).
# usage: cloudinit-netplan.sh FILE
# The file is copied to R/etc/netplan/50-cloud-init.yaml (where cloud-init writes it on
# Ubuntu, mode 0600) in a temporary root R, and netplan renders it for systemd-networkd
# there: nothing of this machine's network is read or changed. Prints netplan's messages with
# R's copy named as FILE ("FILE:LINE:COL: Error ..."); exits non-zero when netplan rejects it.
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need netplan.io netplan
need coreutils mktemp rm mkdir cp chmod ls
need sed sed
needs_checked
[ $# -eq 1 ] || { echo "usage: $0 network-config" >&2; exit 2; }
file=$(absolute "$1")
netplan=$(command -v netplan)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-netplan.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/etc/netplan"
cp "$file" "$tmp/etc/netplan/50-cloud-init.yaml"
chmod 0600 "$tmp/etc/netplan/50-cloud-init.yaml"
out=$("$netplan" generate --root-dir "$tmp" 2>&1)
rc=$?
[ "$rc" -eq 0 ] || starts netplan.io "$netplan" --help  # its command line is Python
[ -z "$out" ] || printf '%s\n' "$out" | sed "s|$tmp/etc/netplan/50-cloud-init.yaml|$file|g"
if [ "$rc" -eq 0 ] && ! ls "$tmp"/run/systemd/network/*.network >/dev/null 2>&1; then
    echo "$file: netplan generated no systemd-networkd configuration" >&2
    rc=1
fi
exit "$rc"
