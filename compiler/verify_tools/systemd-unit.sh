#!/bin/sh
# moat validator: systemd-analyze verify on a generated unit, as installed.
# usage: systemd-unit.sh FILE BUNDLE_PATH INSTALLED_PATH [INSTALLED=BUNDLE_PATH ...]
#   FILE            the unit in a bundle tree, whose bundle-relative path is BUNDLE_PATH
#   INSTALLED_PATH  where the unit is installed, such as /etc/systemd/system/x.service
#   INSTALLED=BUNDLE_PATH  a file the unit runs (ExecStart=...) and the bundle file installed there
# verify insists that ExecStart= programs exist and are executable. Rather than checking a copy
# of the unit rewritten to point elsewhere, the real unit is checked in a throwaway root
# (systemd-analyze --root=TMP): the unit and the bundle's programs at their install paths (with
# their bundle modes), plus a copy of this machine's /usr/lib/systemd/system so that targets
# such as network-online.target resolve (a symlink to it does not work: --root resolves the
# absolute symlinks inside it under TMP). Prints systemd's own messages with FILE:LINE of the
# generated unit; exits non-zero when systemd rejects it.
set -eu
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need systemd systemd-analyze
need_file systemd /usr/lib/systemd/system
need coreutils mktemp rm mkdir cp readlink
need sed sed
needs_checked
[ $# -ge 3 ] || { echo "usage: $0 FILE BUNDLE_PATH INSTALLED_PATH [INSTALLED=BUNDLE_PATH ...]" >&2; exit 2; }
file=$(absolute "$1") rel=$2 installed=$3
shift 3
case $file in
    */"$rel") bundle=${file%/"$rel"} ;;
    *) echo "$0: $file is not the bundle file $rel" >&2; exit 2 ;;
esac
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-unit.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
mkdir -p "$root/usr/lib/systemd" "$root${installed%/*}"
cp -pR /usr/lib/systemd/system "$root/usr/lib/systemd/system"
if [ -d /lib/systemd/system ] && [ "$(readlink -f /lib/systemd/system)" != /usr/lib/systemd/system ]; then
    mkdir -p "$root/lib/systemd" # not merged into /usr
    cp -pR /lib/systemd/system "$root/lib/systemd/system"
fi
cp "$file" "$root$installed"
for pair in "$@"; do
    target=${pair%%=*} source=$bundle/${pair#*=}
    [ -f "$source" ] || { echo "$0: $source (run by the unit as $target) is not in the bundle" >&2; exit 1; }
    mkdir -p "$root${target%/*}"
    cp -p "$source" "$root$target"
done
status=0
systemd-analyze --root="$root" verify --recursive-errors=yes --man=no "$root$installed" >"$tmp/out" 2>&1 || status=$?
sed "s|$root$installed|$file|g; s|$root||g" "$tmp/out"
exit "$status"
