#!/bin/sh
# Check a generated firewalld zone (zones/NAME.xml), policy (policies/NAME.xml) or firewalld.conf
# without a running firewalld: firewall-offline-cmd --check-config reads a whole system-config
# directory, so lay one out in a temp dir. A zone is checked beside a minimal firewalld.conf; a
# policy also beside the zones next to it (../zones/*.xml: the zones it names must exist);
# firewalld.conf beside the zones and policies next to it (its DefaultZone must exist).
# --check-config exits 0 on some rejections (an invalid rich rule is dropped with a WARNING,
# a bad firewalld.conf option is an ERROR line), so any ERROR or WARNING line fails too.
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
file=$(absolute "${1:?usage: firewall-firewalld.sh ZONE.xml|POLICY.xml|firewalld.conf}")
[ -f "$file" ] || { echo "$file: no such file" >&2; exit 2; }
dir=$(mktemp -d) || exit 2
trap 'rm -rf "$dir"' EXIT
mkdir "$dir/zones" "$dir/policies"
case $file in
    */policies/*.xml)
        cp "$file" "$dir/policies/"
        for zone in "${file%/*}"/../zones/*.xml; do
            [ -f "$zone" ] && cp "$zone" "$dir/zones/"
        done
        echo "DefaultZone=public" >"$dir/firewalld.conf"
        checked="$dir/policies/${file##*/}" ;;
    *.xml)
        cp "$file" "$dir/zones/"
        echo "DefaultZone=public" >"$dir/firewalld.conf"
        checked="$dir/zones/${file##*/}" ;;
    *)
        cp "$file" "$dir/firewalld.conf"
        for zone in "${file%/*}"/zones/*.xml; do
            [ -f "$zone" ] && cp "$zone" "$dir/zones/"
        done
        for policy in "${file%/*}"/policies/*.xml; do
            [ -f "$policy" ] && cp "$policy" "$dir/policies/"
        done
        checked="$dir/firewalld.conf" ;;
esac
# firewall-offline-cmd insists on uid 0; a user namespace gives that to a non-root build
as_root=
[ "$(id -u)" -eq 0 ] || as_root="unshare --map-root-user"
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
