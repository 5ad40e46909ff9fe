#!/bin/sh
# moat validator: sshd -t on a generated sshd_config.
# usage: sshd.sh FILE...   (exits non-zero when any file is rejected)
# sshd -t needs a host key it can read: one throwaway Ed25519 key is made in a temporary
# directory under /tmp (removed on exit) and passed with -h. As root, sshd also insists on
# its privilege separation directory /run/sshd (normally made by the ssh service): it is
# created when missing, empty, as the service would. Prints sshd's own messages
# ("FILE line N: ...") and exits non-zero when sshd rejects the file.
set -eu
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need openssh-server sshd
need openssh-client ssh-keygen
need coreutils mktemp rm id mkdir
needs_checked
[ $# -ge 1 ] || { echo "usage: $0 sshd_config..." >&2; exit 2; }
sshd=$(command -v sshd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-sshd.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
ssh-keygen -q -t ed25519 -N '' -C moat-verify -f "$tmp/host_key" </dev/null
if [ "$(id -u)" = 0 ] && [ ! -d /run/sshd ]; then
    mkdir -m 0755 /run/sshd
fi
status=0
for f in "$@"; do
    "$sshd" -t -f "$(absolute "$f")" -h "$tmp/host_key" || status=1
done
exit "$status"
