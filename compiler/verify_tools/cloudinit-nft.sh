#!/bin/sh
# moat validator: `nft --check` on a VM's generated nftables ruleset.
# usage: cloudinit-nft.sh FILE
# The kernel validates the whole transaction without committing it, inside a new user and
# network namespace (CAP_NET_ADMIN there without root, and an empty ruleset: the check never
# depends on or touches this machine's own). nft prints "FILE:LINE:COL-COL: Error: ...".
set -u
[ $# -eq 1 ] || { echo "usage: $0 nftables.conf" >&2; exit 2; }
file=$1
nft=$(PATH="$PATH:/usr/sbin:/sbin" command -v nft) || { echo "nft not found: apt-get install nftables" >&2; exit 127; }
exec unshare --map-root-user --net "$nft" --check --file "$file"
