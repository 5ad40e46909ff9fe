#!/bin/sh
# moat validator: fail2ban-client -t on a generated jail.d file.
# usage: sshd-fail2ban.sh JAIL_FILE
# fail2ban reads a whole configuration directory: a temporary copy (under /tmp, removed on
# exit) of the installed one (/etc/fail2ban, or $MOAT_FAIL2BAN_BASE) supplies the stock
# jail.conf, filters and actions; local overrides (*.local, jail.d/, fail2ban.d/) are left
# out so that only the stock files and the generated one count. Then:
#   1. fail2ban-client -c DIR -t must accept the configuration (unknown filter, action or
#      backend, bad port or time: rejected), and
#   2. every jail the file defines must really start (fail2ban-client -d lists
#      ['start', NAME]): a jail that is not enabled is also a rejection.
set -eu
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
base=${MOAT_FAIL2BAN_BASE:-/etc/fail2ban}
need fail2ban fail2ban-client
need_file fail2ban "$base/jail.conf"
need coreutils mktemp rm cp mkdir
need findutils find
need sed sed
need grep grep
needs_checked
[ $# -eq 1 ] || { echo "usage: $0 jail.conf" >&2; exit 2; }
jail=$(absolute "$1")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-fail2ban.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp -R "$base/." "$tmp/"
rm -rf "$tmp/jail.d" "$tmp/fail2ban.d"
find "$tmp" -name '*.local' -delete
mkdir "$tmp/jail.d" "$tmp/fail2ban.d"
cp "$jail" "$tmp/jail.d/"
fail2ban-client -c "$tmp" -t || { starts fail2ban fail2ban-client --version; exit 1; }
dump=$(fail2ban-client -c "$tmp" -d 2>&1) || { printf '%s\n' "$dump"; exit 1; }
status=0
for name in $(sed -n 's/^[[:space:]]*\[\([^]]*\)\][[:space:]]*$/\1/p' "$jail"); do
    case $name in DEFAULT|INCLUDES|Init|Definition) continue ;; esac
    if ! printf '%s\n' "$dump" | grep -qxF "['start', '$name']"; then
        echo "$jail: jail [$name] is not started (not enabled, or overridden)" >&2
        status=1
    fi
done
exit $status
