#!/bin/sh
# Check a generated nftables ruleset: nft -c -f parses it and asks the kernel to validate the
# whole transaction without committing it. That needs CAP_NET_ADMIN, which a new user and
# network namespace gives without root; the empty namespace also means the check never
# depends on (or touches) this machine's own ruleset.
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need nftables nft
need util-linux unshare
needs_checked
file=$(absolute "${1:?usage: firewall-nft.sh FILE.nft}")
[ -f "$file" ] || { echo "$file: no such file" >&2; exit 2; }
# nft prints "FILE:LINE:COL-COL: Error: ..." with the offending line and a caret
exec unshare --map-root-user --net nft --check --file "$file"
