#!/bin/sh
# Check a generated firewalld zone (zones/NAME.xml), policy (policies/NAME.xml) or firewalld.conf
# without a running firewalld: firewall-offline-cmd --check-config reads a whole system-config
# directory, so lay one out in a temp dir. A zone is checked beside a minimal firewalld.conf; a
# policy also beside the zones next to it (../zones/*.xml: the zones it names must exist);
# firewalld.conf beside the zones and policies next to it (its DefaultZone must exist).
# --check-config exits 0 on some rejections (an invalid rich rule is dropped with a WARNING,
# a bad firewalld.conf option is an ERROR line), so any ERROR or WARNING line fails too.
# usage: firewall-firewalld.sh FILE...   (several files: one Python checks them all, see
# firewalld-many.py; the single-file run gives the messages, at their lines)
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need firewalld firewall-offline-cmd
need_file firewalld /usr/lib/firewalld
need coreutils mktemp rm mkdir cp id
need sed sed
need mawk awk
need grep grep
[ "$(id -u)" -eq 0 ] || need util-linux unshare
needs_checked
[ $# -ge 1 ] || { echo "usage: $0 ZONE.xml|POLICY.xml|firewalld.conf..." >&2; exit 2; }
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
# layout FILE DIR: the system-config directory DIR that checks FILE; prints the path of FILE in it
layout() {
    mkdir "$2" "$2/zones" "$2/policies"
    case $1 in
        */policies/*.xml)
            cp "$1" "$2/policies/"
            for zone in "${1%/*}"/../zones/*.xml; do
                [ -f "$zone" ] && cp "$zone" "$2/zones/"
            done
            echo "DefaultZone=public" >"$2/firewalld.conf"
            echo "$2/policies/${1##*/}" ;;
        *.xml)
            cp "$1" "$2/zones/"
            echo "DefaultZone=public" >"$2/firewalld.conf"
            echo "$2/zones/${1##*/}" ;;
        *)
            cp "$1" "$2/firewalld.conf"
            for zone in "${1%/*}"/zones/*.xml; do
                [ -f "$zone" ] && cp "$zone" "$2/zones/"
            done
            for policy in "${1%/*}"/policies/*.xml; do
                [ -f "$policy" ] && cp "$policy" "$2/policies/"
            done
            echo "$2/firewalld.conf" ;;
    esac
}
# firewall-offline-cmd insists on uid 0; a user namespace gives that to a non-root build
as_root=
[ "$(id -u)" -eq 0 ] || as_root="unshare --map-root-user"
if [ $# -gt 1 ]; then
    # a batch: one Python for all (firewalld-many.py), under the interpreter firewall-offline-cmd
    # names; passes only if every file does (a failed batch is judged again file by file)
    n=0 dirs=
    for f in "$@"; do
        n=$((n + 1))
        [ -f "$f" ] || { echo "$f: no such file" >&2; exit 2; }
        layout "$(absolute "$f")" "$tmp/$n" >/dev/null || exit 2
        dirs="$dirs $tmp/$n"
    done
    python=$(sed -n '1s/^#! *//p' "$(command -v firewall-offline-cmd)")
    # shellcheck disable=SC2086  # the directories are words without spaces (mktemp's, numbered)
    $as_root ${python:-python3} "${0%/*}/firewalld-many.py" /usr/lib/firewalld $dirs && exit 0
    starts firewalld firewall-offline-cmd --version
    exit 1
fi
file=$(absolute "$1")
[ -f "$file" ] || { echo "$file: no such file" >&2; exit 2; }
dir=$tmp/1
checked=$(layout "$file" "$dir") || exit 2
out=$($as_root firewall-offline-cmd --system-config "$dir" --default-config /usr/lib/firewalld --check-config 2>&1)
rc=$?
[ "$rc" -eq 0 ] || starts firewalld firewall-offline-cmd --version  # it is Python, with many modules
# name the checked file as given, not its temp copy; print each message once. Most messages
# carry no line number but quote the value they reject ('bad/if'): prefix FILE:LINE of the
# first line of the file holding that value, so a build can name the blueprint line behind it.
printf '%s\n' "$out" | sed -e "s|$checked|$file|g" -e "s|$dir/|./|g" | awk -v file="$file" '
    NF && !seen[$0]++ {
        where = ""
        rest = $0
        while (where == "" && match(rest, /\047[^\047]+\047/)) {
            value = substr(rest, RSTART + 1, RLENGTH - 2)
            rest = substr(rest, RSTART + RLENGTH)
            n = 0
            while ((getline text < file) > 0) {
                n++
                if (text == value || index(text, "\"" value "\"") || index(text, "=" value)) { where = file ":" n ": "; break }
            }
            close(file)
        }
        print where $0
    }'
if [ "$rc" -ne 0 ]; then
    exit "$rc"
fi
if printf '%s\n' "$out" | grep -Eq '(^|[^A-Za-z])(ERROR|WARNING)[: ]'; then
    exit 1
fi
exit 0
