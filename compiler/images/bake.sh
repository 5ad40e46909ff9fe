#!/bin/sh
# moat images: runs disk-image-create ARGS... inside the mount and pid namespaces that
# compiler/images/bake.py made for it (unshare --mount --pid --kill-child): every mount DIB
# makes, and every process it starts, dies with this namespace.
# MOAT_DM_SHIM set (a directory): this kernel has no device-mapper; its kpartx and dmsetup stand
# in for the real ones, bound over them in this namespace only, with a private /dev/mapper.
set -eu
# as root, sudo only passes commands on; its own warnings went into what diskimage-builder reads
# from `sudo losetup --show` (as_root/sudo says more)
PATH="$MOAT_AS_ROOT:$PATH"
export PATH
if [ -n "${MOAT_DM_SHIM:-}" ]; then
    [ -d /dev/mapper ] || mkdir -m 0755 /dev/mapper
    mount -t tmpfs -o mode=0755 moat-mapper /dev/mapper
    for tool in kpartx dmsetup; do
        real=$(PATH=/usr/sbin:/sbin:/usr/bin:/bin command -v "$tool")
        mount --bind "$MOAT_DM_SHIM/$tool" "$real"
    done
    echo "moat: no device-mapper in this kernel: partitions are mapped to loop devices by offset"
fi
exec disk-image-create "$@"
