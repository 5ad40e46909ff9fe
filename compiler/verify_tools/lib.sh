# shellcheck shell=sh
# Sourced by every validator wrapper: the missing-tool protocol and path handling.
#
# A wrapper that cannot run a program or library it needs does not judge the file: it prints
# "moat-tool-missing: PACKAGE..." (the Debian packages to install, or pypi:NAME) on stderr and
# exits 69 (EX_UNAVAILABLE). compiler/verify.py reports that as a tool-missing warning naming
# the packages, never as a rejection of the file. So each wrapper first `need`s everything it
# runs (not only its main tool), then resolves its file arguments with `absolute` before it
# changes directory or hands them to another program.
# With MOAT_NEEDS_ONLY=1 in its environment, a wrapper checks what it needs and exits (0: all
# there) without looking at its arguments: `moat verify --tools` asks every wrapper this way.

MOAT_TOOL_MISSING=69
# a normal user's PATH lacks the sbin directories on Debian, where several tools live
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin ;; esac
export PATH

# missing PACKAGE... [-- REASON]: give up on the file, naming what to install
missing() {
    packages=
    while [ $# -gt 0 ] && [ "$1" != -- ]; do packages="${packages:+$packages }$1"; shift; done
    [ $# -eq 0 ] || { shift; echo "${0##*/}: $*" >&2; }
    echo "moat-tool-missing: $packages" >&2
    exit "$MOAT_TOOL_MISSING"
}

# need PACKAGE PROGRAM...: each PROGRAM must be on PATH (or an executable path), else PACKAGE is missing
need() {
    package=$1
    shift
    for program in "$@"; do
        case $program in
            */*) [ -x "$program" ] && [ -f "$program" ] && continue ;;
            *) command -v "$program" >/dev/null 2>&1 && continue ;;
        esac
        missing $package -- "$program is not installed or not executable"
    done
}

# need_file PACKAGE FILE...: each FILE (data a tool reads) must exist, else PACKAGE is missing
need_file() {
    package=$1
    shift
    for path in "$@"; do
        [ -e "$path" ] || missing $package -- "$path does not exist"
    done
}

# starts PACKAGE PROGRAM ARG...: call when PROGRAM failed on the file, to tell a rejection from a
# tool that does not even start (a Python program missing a module, say): when `PROGRAM ARG...`
# (--version or the like) fails too, PACKAGE is missing. Costs nothing when the file passes.
starts() {
    package=$1
    shift
    if ! said=$("$@" 2>&1 </dev/null); then
        missing $package -- "$1 does not start: ${said##*
}"  # its last line
    fi
}

# needs_checked: call after the last need; with MOAT_NEEDS_ONLY=1, stop here
needs_checked() {
    if [ "${MOAT_NEEDS_ONLY:-}" = 1 ]; then
        exit 0
    fi
}

# absolute PATH: PATH made absolute against the directory the wrapper was started in
absolute() {
    case $1 in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$MOAT_START_DIR" "$1" ;;
    esac
}
MOAT_START_DIR=$(pwd)

# $EMPTY_NETNS PROGRAM ARG...: run PROGRAM in a new, empty network namespace (nothing of this
# machine's interfaces or ruleset is seen or touched). As root, a plain network namespace: the
# form the host runs its own tools in, with the machine's kernel limits (nft raises its netlink
# socket buffer for a large ruleset only with CAP_NET_ADMIN of the machine; in a user namespace
# it is capped at net.core.wmem_max and a valid ruleset of ~1000 VMs fails "Message too long":
# firewall-nft.sh then loads it in pieces).
# Not root, a new user namespace gives CAP_NET_ADMIN without privileges. Callers `need` unshare.
# shellcheck disable=SC2034  # used by the wrappers that source this file
if [ "$(id -u)" = 0 ]; then EMPTY_NETNS="unshare --net"; else EMPTY_NETNS="unshare --map-root-user --net"; fi

# in_user_namespace: whether this runs in a user namespace (a check for a user who is not root:
# the wrapper's own, or moat's tools tree entered without root), whatever `id -u` says there.
in_user_namespace() {
    [ "$(id -u)" != 0 ] || ! awk 'NR == 1 { exit !($1 == 0 && $2 == 0 && $3 == 4294967295) }' /proc/self/uid_map
}
