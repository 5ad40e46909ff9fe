#!/bin/sh
# moat tools tree: run one command inside a tree, as if it were the whole machine.
# usage: enter.sh TREE BUNDLE TOOLS -- COMMAND [ARG...]
# Started by enter.py under `unshare --mount --pid --fork` (plus --map-root-user when not root):
# every mount here is private to that namespace and goes with it. The tree is bound read-only,
# with its own /proc, the machine's /dev and /sys, empty /tmp and /run, BUNDLE read-only at
# /moat/bundle and the validator scripts TOOLS at /moat/verify_tools. pivot_root (not chroot)
# makes it the root, so the validators may open user namespaces of their own (unshare -rn nft).
set -eu
if [ $# -lt 5 ] || [ "$4" != -- ]; then echo "usage: $0 TREE BUNDLE TOOLS -- COMMAND..." >&2; exit 2; fi
tree=$1 bundle=$2 tools=$3
shift 4
mount --make-rprivate /
mount --rbind "$tree" "$tree"
mount -o remount,bind,ro "$tree" 2>/dev/null || true  # best effort: a locked mount may refuse
mount -t proc proc "$tree/proc"
mount --rbind /dev "$tree/dev"
mount --rbind /sys "$tree/sys"
mount -t tmpfs -o mode=1777 tmpfs "$tree/tmp"
mount -t tmpfs -o mode=0755 tmpfs "$tree/run"
mount --bind "$bundle" "$tree/moat/bundle"
mount -o remount,bind,ro "$tree/moat/bundle" 2>/dev/null || true
mount --bind "$tools" "$tree/moat/verify_tools"
cd "$tree"
pivot_root . .
umount -l .
cd /
exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 TMPDIR=/tmp "$@"
