#!/bin/sh
# moat validator: `nft --check` on a VM's generated nftables ruleset.
# usage: cloudinit-nft.sh FILE...   (exits non-zero when any is rejected)
# The kernel validates the whole transaction without committing it, inside an empty network
# namespace ($EMPTY_NETNS, lib.sh: the check never depends on or touches this machine's own
# ruleset). nft prints "FILE:LINE:COL-COL: Error: ...". A check mostly waits for the kernel, which
# takes one transaction at a time per namespace: many files are shared out among namespaces side
# by side, four per CPU (100 rulesets: 0.25 s instead of 1.6 s on 2 CPUs).
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need nftables nft
need util-linux unshare
need coreutils nproc
need findutils xargs
needs_checked
[ $# -ge 1 ] || { echo "usage: $0 nftables.conf..." >&2; exit 2; }
for f in "$@"; do set -- "$@" "$(absolute "$f")"; shift; done
nft=$(command -v nft)
jobs=$(( $(nproc) * 4 ))
per=$(( ($# + jobs - 1) / jobs ))
# xargs exits 123 when any namespace's files were not all accepted
# shellcheck disable=SC2086,SC2016  # EMPTY_NETNS is a command prefix (lib.sh); $0/$f are the inner sh's
printf '%s\n' "$@" | xargs -n "$per" -P "$jobs" $EMPTY_NETNS \
    sh -c 'status=0; for f; do "$0" --check --file "$f" || status=1; done; exit $status' "$nft" || exit 1
