#!/bin/sh
# moat images: runs disk-image-create ARGS... inside the mount and pid namespaces that
# compiler/images/bake.py made for it (unshare --mount --pid --kill-child): every mount DIB
# makes, and every process it starts, dies with this namespace.
# MOAT_DM_SHIM set (a directory): this kernel has no device-mapper; its kpartx and dmsetup stand
# in for the real ones, bound over them in this namespace only, with a private /dev/mapper.
set -eu
# diskimage-builder reads what `sudo losetup --show` prints, stderr included: sudo's "unable to
# resolve host" warning (a machine whose name /etc/hosts lacks) became the device's name. Here
# only, /etc/hosts names this machine.
name=$(hostname)
if ! getent hosts "$name" >/dev/null 2>&1; then
    hosts=$(mktemp)
    { cat /etc/hosts 2>/dev/null || true; echo "127.0.1.1 $name"; } >"$hosts"
    chmod 0644 "$hosts"
    mount --bind "$hosts" /etc/hosts
    rm -f "$hosts"  # the mount keeps it
    echo "moat: $name was not in /etc/hosts: named there for this bake only"
fi
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
