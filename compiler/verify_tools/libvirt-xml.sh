#!/bin/sh
# moat validator: virt-xml-validate on a generated libvirt XML (domain, network, pool, volume).
# usage: libvirt-xml.sh TYPE FILE...   (exits non-zero when any file is rejected)
# virt-xml-validate is a shell script around xmllint and libvirt's RELAX NG schemas: without
# them it fails like a rejection would, so they are needed here first (see lib.sh).
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need libvirt-clients virt-xml-validate
need libxml2-utils xmllint
need_file libvirt0 /usr/share/libvirt/schemas
need grep grep
need mawk awk
needs_checked
[ $# -ge 2 ] || { echo "usage: $0 TYPE FILE..." >&2; exit 2; }
type=$1
shift
status=0
for f in "$@"; do
    virt-xml-validate "$(absolute "$f")" "$type" || status=1
done
exit "$status"
