#!/bin/sh
# moat validator: virt-xml-validate on a generated libvirt XML (domain, network, pool, volume).
# usage: libvirt-xml.sh TYPE FILE...   (exits non-zero when any file is rejected)
# virt-xml-validate is a shell script around xmllint and libvirt's RELAX NG schemas: without
# them it fails like a rejection would, so they are needed here first (see lib.sh). Several files
# are validated in one xmllint run, with the schema virt-xml-validate would use.
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need libvirt-clients virt-xml-validate
need libxml2-utils xmllint
need sed sed
need_file libvirt0 /usr/share/libvirt/schemas
need grep grep
need mawk awk
needs_checked
[ $# -ge 2 ] || { echo "usage: $0 TYPE FILE..." >&2; exit 2; }
type=$1
shift
# several files: the one xmllint command virt-xml-validate runs for a file of a given type
# (xmllint --noout --relaxng SCHEMA FILE), given them all, so the schema is read once, not once
# per file; the schema is the one the installed virt-xml-validate names
validate=$(command -v virt-xml-validate)
schemas=$(sed -n 's|^SCHEMA="\(/[^"$]*\)/${TYPE}.rng"$|\1|p' "$validate")
if [ $# -gt 1 ] && [ -n "$schemas" ] && [ -f "$schemas/$type.rng" ]; then
    for f in "$@"; do set -- "$@" "$(absolute "$f")"; shift; done
    out=$(xmllint --noout --relaxng "$schemas/$type.rng" "$@" 2>&1) && exit 0
    printf '%s\n' "$out" | grep -v ' validates$'
    exit 1
fi
status=0
for f in "$@"; do
    virt-xml-validate "$(absolute "$f")" "$type" || status=1
done
exit "$status"
