#!/bin/sh
# moat validator: a generated file of /etc/apt/apt.conf.d/ for unattended-upgrades.
# usage: updates-apt.sh FILE
# 1. apt-config reads it as apt will: under its own name (apt skips files of some names) in an
#    otherwise empty apt.conf.d, so a syntax error is apt's own ("E: Syntax error FILE:LINE: ...")
#    and a file apt would skip, or that sets nothing, is a rejection.
# 2. every option it sets must be one its readers know (apt ignores unknown options silently, so
#    a misspelt one is a setting nobody applies): APT::Periodic::* as apt.systemd.daily (package
#    apt) reads them, Unattended-Upgrade::* as unattended-upgrade 2.9 (Debian 12) reads them
#    (listed here: that program is not in the tools tree). Names compare without case, as apt's do.
# Prints "FILE:LINE: message" (the line where the name is written) and exits 1 on rejection.
set -eu
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
DAILY=/usr/lib/apt/apt.systemd.daily
need apt apt-config
need_file apt "$DAILY"
need coreutils mktemp rm cp mkdir cat sort
need grep grep
need sed sed
need mawk awk
needs_checked
[ $# -eq 1 ] || { echo "usage: $0 FILE" >&2; exit 2; }
file=$(absolute "$1")
name=${file##*/}

UNATTENDED="Allow-APT-Mark-Fallback Allow-downgrade Allowed-Origins AutoFixInterruptedDpkg Automatic-Reboot
Automatic-Reboot-Time Automatic-Reboot-WithUsers Debug DevRelease IgnoreAppsRequireRestart InstallOnShutdown
Keep-Debs-After-Install LogDir LogFile Mail MailOnlyOnError MailReport MinimalSteps OnlyOnACPower Origins-Pattern
Package-Blacklist Package-Whitelist Package-Whitelist-Strict Remove-New-Unused-Dependencies Remove-Unused-Dependencies
Remove-Unused-Kernel-Packages Sender Skip-Updates-On-Metered-Connections SyslogEnable SyslogFacility Update-Days Verbose"
PERIODIC=$(grep -oE 'APT::Periodic::[A-Za-z0-9-]+' "$DAILY" | sed 's/^APT::Periodic:://' | sort -u)
[ -n "$PERIODIC" ] || missing apt -- "$DAILY names no APT::Periodic option"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-apt.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/parts"
printf 'Dir::Etc::parts "%s/parts/";\n' "$tmp" >"$tmp/apt.conf"
APT_CONFIG=$tmp/apt.conf apt-config dump >"$tmp/without" 2>&1
cp "$file" "$tmp/parts/$name"
# apt's messages, naming the file at its path (a message that does not gets it in front)
said() {
    sed "s|$tmp/parts/$name|$file|g" "$tmp/err" | awk -v f="$file" 'index($0, f) { print; next } { print f ": " $0 }'
}
if ! APT_CONFIG=$tmp/apt.conf apt-config dump >"$tmp/with" 2>"$tmp/err"; then
    said
    exit 1
fi
if [ -s "$tmp/err" ]; then  # notices and warnings: a name apt skips ("Ignoring file ...") and the like
    said
    exit 1
fi
if cmp -s "$tmp/without" "$tmp/with"; then
    echo "$file: apt-config reads nothing from it under the name $name (a name apt skips, or no option)"
    exit 1
fi
# the options it added: "Key "value";" lines of the dump that were not there without it
awk -v unattended="$UNATTENDED" -v periodic="$PERIODIC" -v file="$file" '
    BEGIN {
        n = split(tolower(unattended), u, /[ \n]+/); for (i = 1; i <= n; i++) if (u[i] != "") ok["unattended-upgrade::" u[i]] = 1
        n = split(tolower(periodic), p, /[ \n]+/); for (i = 1; i <= n; i++) if (p[i] != "") ok["apt::periodic::" p[i]] = 1
        ok["unattended-upgrade"] = 1; ok["apt::periodic"] = 1
    }
    FNR == NR { before[$0] = 1; next }
    FILENAME == ARGV[2] {
        if ($0 in before) next
        key = $1; sub(/::$/, "", key)       # a list item ("Key:: "value";") belongs to Key
        if (!(tolower(key) in ok)) bad[key] = 1
        next
    }
    { lines[FNR] = $0 }
    END {
        status = 0
        for (key in bad) {
            leaf = key; sub(/.*::/, "", leaf); where = ""
            for (i = 1; i in lines; i++) if (index(tolower(lines[i]), tolower(leaf))) { where = ":" i; break }
            print file where ": " key " is not an option of unattended-upgrade or apt.systemd.daily (apt ignores it)"
            status = 1
        }
        exit status
    }' "$tmp/without" "$tmp/with" "$file"
