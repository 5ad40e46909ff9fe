#!/bin/sh
# moat validator: `cloud-init schema -c FILE` on a generated user-data (#cloud-config).
# usage: cloudinit-schema.sh FILE...   (several files: one cloud-init run checks them all)
# cloud-init is Debian's package unpacked, not installed (no services, no generators), under
# $MOAT_CLOUD_INIT_ROOT (default /opt/moat-tools/cloud-init, made by tests/system/install.sh),
# run by the system python3 with Debian's modules (python3-yaml, -jsonschema, -jinja2,
# -configobj, -requests, -jsonpatch); else a cloud-init on PATH. Prints cloud-init's own
# messages; on a rejection also "FILE:LINE: ..." for each line that `--annotate` marks (cloud-init
# names keys, not lines). Exits non-zero when cloud-init rejects the file.
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
# shellcheck source=cloudinit-lib.sh
. "${0%/*}/cloudinit-lib.sh"
need sed sed
need mawk awk
needs_checked
[ $# -ge 1 ] || { echo "usage: $0 user-data..." >&2; exit 2; }
if [ $# -gt 1 ]; then  # a batch: passes only if every file does (cloudinit-many.py)
    for f in "$@"; do set -- "$@" "$(absolute "$f")"; shift; done
    cloud_init_many schema "$@"
    exit $?
fi
file=$(absolute "$1")
cloud_init_quick schema "$file" && exit 0
cloud_init_starts
out=$(cloud_init schema -c "$file" 2>&1)
rc=$?
printf '%s\n' "$out"
[ "$rc" -eq 0 ] && exit 0
# YAML errors name the line themselves (format-lN.cM)
printf '%s\n' "$out" | sed -n "s|.*format-l\([0-9][0-9]*\)\.c\([0-9][0-9]*\).*|$file:\1:\2: not valid YAML|p"
# schema errors: the lines --annotate marks "# E<n>" (its listing ends at "# Errors:")
cloud_init schema -c "$file" --annotate 2>/dev/null | awk -v f="$file" '
    /^# Errors: -+$/ { exit }
    /\t# E[0-9]+(,E[0-9]+)*$/ { n = $0; sub(/.*\t# /, "", n); print f ":" NR ": schema error " n }'
exit "$rc"
