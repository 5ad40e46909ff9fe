#!/bin/sh
# moat validator: cloud-init's own reading of a generated network-config (version 2).
# usage: cloudinit-netconvert.sh FILE...   (several files: one cloud-init run checks them all)
# `cloud-init devel net-convert` parses the file as the NoCloud datasource does and renders
# it for systemd-networkd and for ifupdown (ENI), the renderers of Debian images; on Ubuntu,
# cloud-init hands version 2 to netplan as it is (see cloudinit-netplan.sh). Same cloud-init
# as cloudinit-schema.sh. Output goes to a temporary directory; exits non-zero when cloud-init
# cannot parse or render the file.
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
# shellcheck source=cloudinit-lib.sh
. "${0%/*}/cloudinit-lib.sh"
need coreutils mktemp rm tail
needs_checked
[ $# -ge 1 ] || { echo "usage: $0 network-config..." >&2; exit 2; }
if [ $# -gt 1 ]; then  # a batch: passes only if every file does (cloudinit-many.py)
    for f in "$@"; do set -- "$@" "$(absolute "$f")"; shift; done
    cloud_init_many net-convert "$@"
    exit $?
fi
file=$(absolute "$1")
cloud_init_quick net-convert "$file" && exit 0
cloud_init_starts
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-netconvert.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
rc=0
for renderer in networkd eni; do
    if ! out=$(cloud_init devel net-convert --network-data "$file" --kind yaml --distro debian \
            --output-kind "$renderer" --directory "$tmp/$renderer" 2>&1); then
        # the last line of cloud-init's traceback is the reason
        echo "$file: cloud-init cannot render it for $renderer: $(printf '%s\n' "$out" | tail -n 1)" >&2
        rc=1
    fi
done
exit "$rc"
