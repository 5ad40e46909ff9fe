#!/bin/sh
# moat validator: a generated kickstart, checked by pykickstart's ksvalidator for RHEL 9,
# then each %pre/%post script (sh or bash interpreter) by `bash -n`/`sh -n` and shellcheck.
# usage: kickstart.sh KSVALIDATOR FILE
# ksvalidator does not follow %include (the included file is made by %pre at install time) and
# does not look into scripts: each script is written to a temporary file in which every other
# line of the kickstart is blank, so the line numbers the shell and shellcheck print are
# those of FILE (printed as "FILE:LINE:COL: ..."). Exits non-zero on any rejection.
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
[ $# -ge 1 ] || { echo "usage: $0 KSVALIDATOR ks.cfg" >&2; exit 2; }
case $1 in */*) ksvalidator=$(absolute "$1") ;; *) ksvalidator=$1 ;; esac
need pypi:pykickstart "$ksvalidator"
need shellcheck shellcheck
need bash bash
need dash sh
need mawk awk
need sed sed
need coreutils mktemp rm
needs_checked
[ $# -eq 2 ] || { echo "usage: $0 KSVALIDATOR ks.cfg" >&2; exit 2; }
file=$(absolute "$2")
"$ksvalidator" -v RHEL9 "$file" || { starts pypi:pykickstart "$ksvalidator" --help; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-ks.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
rc=0
# "start end shell" per script section; shell is sh, bash or other (not checked)
sections=$(awk '
    !start && /^%(pre|pre-install|post|onerror)([[:space:]]|$)/ {
        start = NR; shell = "sh"
        if (match($0, /--interpreter[= ][^[:space:]]*/)) {
            interp = substr($0, RSTART + 14, RLENGTH - 14)
            shell = interp ~ /\/bash$/ ? "bash" : interp ~ /\/sh$/ ? "sh" : "other"
        }
        next
    }
    start && /^%end[[:space:]]*$/ { print start, NR, shell; start = 0 }' "$file")
script=$tmp/script
printf '%s\n' "$sections" | {
    bad=0
    while read -r start end shell; do
        [ -n "$start" ] && [ "$shell" != other ] || continue
        awk -v a="$start" -v b="$end" '{ print (NR > a && NR < b) ? $0 : "" }' "$file" >"$script"
        out=$("$shell" -n "$script" 2>&1) || bad=1
        [ -z "$out" ] || printf '%s\n' "$out" | sed "s|$script|$file|g"
        out=$(shellcheck --shell="$shell" --severity=warning --format=gcc "$script") || bad=1
        [ -z "$out" ] || printf '%s\n' "$out" | sed "s|$script|$file|g"
    done
    exit "$bad"
} || rc=1
exit "$rc"
