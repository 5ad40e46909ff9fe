#!/bin/sh
# Check a generated nftables ruleset: nft -c -f parses it and asks the kernel to validate the
# whole transaction without committing it, in an empty network namespace ($EMPTY_NETNS, lib.sh:
# as root the form the host loads it in), so the check never depends on (or touches) this
# machine's own ruleset.
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need nftables nft
need util-linux unshare
needs_checked
file=$(absolute "${1:?usage: firewall-nft.sh FILE.nft}")
[ -f "$file" ] || { echo "$file: no such file" >&2; exit 2; }
# nft prints "FILE:LINE:COL-COL: Error: ..." with the offending line and a caret
# shellcheck disable=SC2086  # EMPTY_NETNS is a command prefix (lib.sh)
exec $EMPTY_NETNS nft --check --file "$file"
