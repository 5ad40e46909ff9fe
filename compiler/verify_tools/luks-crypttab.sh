#!/bin/sh
# luks-crypttab.sh CRYPTTAB [FSTAB]: check a crypttab (and an fstab) with systemd's own parsers.
#
# Not a bundle validator: the crypttab of a VM is written inside the VM by
# moat-luks-provision (LUKS UUIDs exist only after formatting); tests run this on it.
# 1. systemd-cryptsetup-generator parses CRYPTTAB; it always exits 0, so any message it
#    prints is a rejection, and every entry must have produced its systemd-cryptsetup@ unit
#    (one unit per entry: a duplicate name is a rejection).
# 2. each entry's options go through systemd-cryptsetup itself (the program that reads them
#    at boot), pointed at a device that does not exist: it parses the options, then stops at
#    the missing device; anything it says before that is a rejection. header= is left out
#    (it would name a real device to open).
# 3. with FSTAB, systemd-fstab-generator parses it the same way; every entry must have
#    produced the mount unit of its mount point.
# Prints the tools' messages (with FILE:LINE where they give them); exits 1 on rejection.
set -eu
set -f  # entries are split into fields, never globbed
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
GENERATORS=/lib/systemd/system-generators
CRYPTSETUP=/lib/systemd/systemd-cryptsetup
need systemd "$GENERATORS/systemd-cryptsetup-generator" "$GENERATORS/systemd-fstab-generator" "$CRYPTSETUP" systemd-escape
need coreutils mktemp rm mkdir env cat timeout tr paste wc
need sed sed
need grep grep
need mawk awk
need findutils find
needs_checked

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 CRYPTTAB [FSTAB]" >&2
    exit 2
fi
crypttab=$(absolute "$1")
fstab=${2:+$(absolute "$2")}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bad=0

# run_generator NAME VAR FILE: run a generator on FILE into $work/NAME, stderr to $work/NAME.err
run_generator() {
    mkdir "$work/$1"
    env "$2=$3" SYSTEMD_PROC_CMDLINE="" SYSTEMD_IN_INITRD=0 SYSTEMD_LOG_TARGET=console SYSTEMD_LOG_COLOR=0 \
        "$GENERATORS/$1" "$work/$1" "$work/$1" "$work/$1" </dev/null >"$work/$1.out" 2>"$work/$1.err" || {
        echo "$1 exited with status $?" >>"$work/$1.err"
    }
    # informational, not about the file: a container has no swap
    sed -i '/^Running in a container, ignoring fstab swap entry/d' "$work/$1.err"
    cat "$work/$1.out" "$work/$1.err"
    if [ -s "$work/$1.err" ] || [ -s "$work/$1.out" ]; then
        bad=1
    fi
}

[ -r "$crypttab" ] || { echo "$crypttab: cannot read" >&2; exit 1; }
run_generator systemd-cryptsetup-generator SYSTEMD_CRYPTTAB "$crypttab"
entries=0
n=0
while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    # shellcheck disable=SC2086 # split the entry into its fields
    set -- $line
    [ $# -gt 0 ] || continue
    case $1 in '#'*) continue ;; esac
    entries=$((entries + 1))
    unit="systemd-cryptsetup@$(systemd-escape -- "$1").service"
    if [ ! -f "$work/systemd-cryptsetup-generator/$unit" ]; then
        echo "$crypttab:$n: no $unit generated for '$1'"
        bad=1
    fi
    options=$(printf '%s\n' "${4:-}" | tr ',' '\n' | grep -v '^header=' | paste -sd, -) || options=
    missing="$work/absent-device"
    timeout 10 env SYSTEMD_LOG_TARGET=console SYSTEMD_LOG_COLOR=0 \
        "$CRYPTSETUP" attach "$1" "$missing" "${3:-none}" "$options" </dev/null >"$work/attach.log" 2>&1 || :
    # what it said before reaching the (missing) device; all of it if it never got there
    said=$(awk -v m="$missing" 'index($0, m) { exit } { print }' "$work/attach.log")
    if [ -n "$said" ] || ! grep -qF "$missing" "$work/attach.log"; then
        if [ -z "$said" ]; then said=$(cat "$work/attach.log"); fi
        printf '%s\n' "$said" | sed "s|^|$crypttab:$n: systemd-cryptsetup: |"
        bad=1
    fi
done <"$crypttab"
units=$(find "$work/systemd-cryptsetup-generator" -maxdepth 1 -name 'systemd-cryptsetup@*.service' | wc -l)
if [ "$units" -ne "$entries" ]; then
    echo "$crypttab: $entries entries gave $units systemd-cryptsetup@ units (duplicate names?)"
    bad=1
fi

if [ -n "$fstab" ]; then
    [ -r "$fstab" ] || { echo "$fstab: cannot read" >&2; exit 1; }
    run_generator systemd-fstab-generator SYSTEMD_FSTAB "$fstab"
    n=0
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        # shellcheck disable=SC2086 # split the entry into its fields
        set -- $line
        [ $# -gt 0 ] || continue
        case $1 in '#'*) continue ;; esac
        case ${3:-} in swap) continue ;; esac
        unit=$(systemd-escape --path --suffix=mount -- "${2:-}" 2>/dev/null) || unit="(invalid mount point)"
        if [ ! -f "$work/systemd-fstab-generator/$unit" ]; then
            echo "$fstab:$n: no $unit generated for mount point '${2:-}'"
            bad=1
        fi
    done <"$fstab"
fi
exit "$bad"
