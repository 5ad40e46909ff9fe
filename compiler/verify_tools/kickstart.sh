#!/bin/sh
# moat validator: a generated kickstart, checked by pykickstart's ksvalidator for RHEL 9,
# then each %pre/%post script (sh or bash interpreter) by `bash -n`/`sh -n` and shellcheck.
# usage: kickstart.sh KSVALIDATOR FILE...   (several files: a pass or a failure for all, without
# messages; the single-file run gives them)
# ksvalidator does not follow %include (the included file is made by %pre at install time) and
# does not look into scripts: each script is written to a temporary file in which every other
# line of the kickstart is blank, so the line numbers the shell and shellcheck print are
# those of FILE (printed as "FILE:LINE:COL: ..."). Exits non-zero on any rejection.
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
[ $# -ge 1 ] || { echo "usage: $0 KSVALIDATOR ks.cfg..." >&2; exit 2; }
case $1 in */*) ksvalidator=$(absolute "$1") ;; *) ksvalidator=$1 ;; esac
need pypi:pykickstart "$ksvalidator"
need shellcheck shellcheck
need bash bash
need dash sh
need mawk awk
need sed sed
need coreutils mktemp rm mkdir
needs_checked
[ $# -ge 2 ] || { echo "usage: $0 KSVALIDATOR ks.cfg..." >&2; exit 2; }
shift
# sections FILE: "start end shell" per script section; shell is sh, bash or other (not checked)
sections() {
    awk '
        !start && /^%(pre|pre-install|post|onerror)([[:space:]]|$)/ {
            start = NR; shell = "sh"
            if (match($0, /--interpreter[= ][^[:space:]]*/)) {
                interp = substr($0, RSTART + 14, RLENGTH - 14)
                shell = interp ~ /\/bash$/ ? "bash" : interp ~ /\/sh$/ ? "sh" : "other"
            }
            next
        }
        start && /^%end[[:space:]]*$/ { print start, NR, shell; start = 0 }' "$1"
}
# script FILE START END: FILE with every line outside the section blanked (same line numbers)
script() {
    awk -v a="$2" -v b="$3" '{ print (NR > a && NR < b) ? $0 : "" }' "$1"
}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-ks.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if [ $# -gt 1 ]; then
    # a batch: ksvalidator once for all files (a parser of its own for each), each shell once for
    # all their scripts; passes only if every file does (a failed batch is judged file by file)
    n=0 files=
    for f in "$@"; do
        f=$(absolute "$f")
        files="$files $f"
    done
    # shellcheck disable=SC2086  # bundle paths: words without spaces
    # ksvalidator (a Python start) alongside the shell checks: two CPUs, about half the wall time
    # shellcheck disable=SC2086  # $files: the file names, split
    "$ksvalidator" -v RHEL9 $files >/dev/null 2>&1 &
    ks=$!
    mkdir "$tmp/sh" "$tmp/bash"
    for f in $files; do
        n=$((n + 1))
        sections "$f" >"$tmp/sections"
        while read -r start end shell; do
            [ -n "$start" ] && [ "$shell" != other ] || continue
            script "$f" "$start" "$end" >"$tmp/$shell/$n-$start"
            "$shell" -n "$tmp/$shell/$n-$start" >/dev/null 2>&1 || exit 1
        done <"$tmp/sections"
    done
    for shell in sh bash; do
        set -- "$tmp/$shell"/*
        [ -f "$1" ] || continue
        shellcheck --shell="$shell" --severity=warning --format=gcc "$@" >/dev/null || exit 1
    done
    wait "$ks" || { starts pypi:pykickstart "$ksvalidator" --help; exit 1; }
    exit 0
fi
file=$(absolute "$1")
"$ksvalidator" -v RHEL9 "$file" >"$tmp/ksvalidator.out" 2>&1 &
ks=$!
rc=0
found=$(sections "$file")
script=$tmp/script
printf '%s\n' "$found" | {
    bad=0
    while read -r start end shell; do
        [ -n "$start" ] && [ "$shell" != other ] || continue
        script "$file" "$start" "$end" >"$script"
        out=$("$shell" -n "$script" 2>&1) || bad=1
        [ -z "$out" ] || printf '%s\n' "$out" | sed "s|$script|$file|g"
        out=$(shellcheck --shell="$shell" --severity=warning --format=gcc "$script") || bad=1
        [ -z "$out" ] || printf '%s\n' "$out" | sed "s|$script|$file|g"
    done
    exit "$bad"
} >"$tmp/scripts.out" 2>&1 || rc=1
# ksvalidator's verdict first: a kickstart it refuses is reported as before, without the scripts
wait "$ks" || { cat "$tmp/ksvalidator.out"; starts pypi:pykickstart "$ksvalidator" --help; exit 1; }
cat "$tmp/ksvalidator.out" "$tmp/scripts.out"
exit "$rc"
