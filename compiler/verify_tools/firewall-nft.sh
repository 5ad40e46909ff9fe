#!/bin/sh
# Check a generated nftables ruleset: nft -c -f parses it and asks the kernel to validate the
# whole transaction without committing it, in an empty network namespace ($EMPTY_NETNS, lib.sh:
# as root the form the host loads it in), so the check never depends on (or touches) this
# machine's own ruleset. Not root (or in the tools tree entered without root), the namespace is
# a user namespace, where nft cannot send a large ruleset (~1000 VMs) in one batch, which the
# host, as root, loads: there a ruleset over 64 KiB is loaded into the empty namespace as the
# same statements in several transactions (nft-pieces.py), and one it cannot cut is checked whole.
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need nftables nft
need util-linux unshare
needs_checked
file=$(absolute "${1:?usage: firewall-nft.sh FILE.nft}")
[ -f "$file" ] || { echo "$file: no such file" >&2; exit 2; }
# nft prints "FILE:LINE:COL-COL: Error: ..." with the offending line and a caret
if in_user_namespace && [ "$(wc -c <"$file")" -gt 65536 ]; then
    need python3 python3
    # shellcheck disable=SC2086  # EMPTY_NETNS is a command prefix (lib.sh)
    $EMPTY_NETNS python3 "${0%/*}/nft-pieces.py" "$file"
    status=$?
    [ "$status" = 3 ] || exit "$status"
fi
# shellcheck disable=SC2086  # EMPTY_NETNS is a command prefix (lib.sh)
exec $EMPTY_NETNS nft --check --file "$file"
