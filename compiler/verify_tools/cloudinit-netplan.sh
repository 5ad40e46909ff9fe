#!/bin/sh
# moat validator: `netplan generate` on generated cloud-init network-configs (version 2).
# usage: cloudinit-netplan.sh FILE...
# Each file is copied to R/etc/netplan/50-cloud-init.yaml (where cloud-init writes it on
# Ubuntu, mode 0600) in a temporary root R of its own, and netplan's generator renders it for
# systemd-networkd there: nothing of this machine's network is read or changed. The generator
# is what `netplan generate --root-dir R` runs (/lib/netplan/generate, C): called directly, many
# files cost no Python start each. Prints netplan's messages with R's copy named as FILE
# ("FILE:LINE:COL: Error ..."); exits non-zero when netplan rejects any file.
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need netplan.io netplan
need coreutils mktemp rm mkdir cp chmod ls
need sed sed
generate=${NETPLAN_GENERATE_PATH:-/lib/netplan/generate}
[ -x "$generate" ] || generate="$(command -v netplan) generate"
needs_checked
[ $# -ge 1 ] || { echo "usage: $0 network-config..." >&2; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-netplan.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
status=0
n=0
for arg in "$@"; do
    file=$(absolute "$arg")
    n=$((n + 1))
    mkdir -p "$tmp/$n/etc/netplan"
    cp "$file" "$tmp/$n/etc/netplan/50-cloud-init.yaml"
    chmod 0600 "$tmp/$n/etc/netplan/50-cloud-init.yaml"
    out=$($generate --root-dir "$tmp/$n" 2>&1)
    rc=$?
    [ "$rc" -eq 0 ] || starts netplan.io netplan --help  # its command line is Python
    [ -z "$out" ] || printf '%s\n' "$out" | sed "s|$tmp/$n/etc/netplan/50-cloud-init.yaml|$file|g"
    if [ "$rc" -eq 0 ] && ! ls "$tmp/$n"/run/systemd/network/*.network >/dev/null 2>&1; then
        echo "$file: netplan generated no systemd-networkd configuration" >&2
        rc=1
    fi
    [ "$rc" -eq 0 ] || status=1
    rm -rf "${tmp:?}/$n"
done
exit "$status"
