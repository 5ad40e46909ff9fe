#!/bin/sh
# moat validator: `nft --check` on a VM's generated nftables ruleset.
# usage: cloudinit-nft.sh FILE
# The kernel validates the whole transaction without committing it, inside an empty network
# namespace ($EMPTY_NETNS, lib.sh: the check never depends on or touches this machine's own
# ruleset). nft prints "FILE:LINE:COL-COL: Error: ...".
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need nftables nft
need util-linux unshare
needs_checked
[ $# -eq 1 ] || { echo "usage: $0 nftables.conf" >&2; exit 2; }
file=$(absolute "$1")
nft=$(command -v nft)
# shellcheck disable=SC2086  # EMPTY_NETNS is a command prefix (lib.sh)
exec $EMPTY_NETNS "$nft" --check --file "$file"
