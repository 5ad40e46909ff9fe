#!/bin/sh
# moat validator: cloud-init's own checks of a VM's seed files, by their name: a user-data is
# checked by `cloud-init schema` (cloudinit-schema.sh), a network-config by `cloud-init devel
# net-convert` (cloudinit-netconvert.sh).
# usage: cloudinit.sh FILE...   (several files, of either kind: one Python process, cloud-init
# imported once, checks them all; one file: that file's wrapper, with its messages)
# Starting cloud-init's Python costs about a third of a second on two CPUs: once per build and
# not once per kind of file.
set -u
if [ $# -eq 1 ] && [ "${MOAT_NEEDS_ONLY:-}" != 1 ]; then
    case ${1##*/} in
        network-config*) exec "${0%/*}/cloudinit-netconvert.sh" "$1" ;;
        *) exec "${0%/*}/cloudinit-schema.sh" "$1" ;;
    esac
fi
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
# shellcheck source=cloudinit-lib.sh
. "${0%/*}/cloudinit-lib.sh"
need coreutils mktemp rm tail
need sed sed
need mawk awk
needs_checked
[ $# -ge 1 ] || { echo "usage: $0 user-data|network-config..." >&2; exit 2; }
for f in "$@"; do set -- "$@" "$(absolute "$f")"; shift; done
cloud_init_many auto "$@"
