#!/bin/sh
# Debian's kernel for the stand-in installer ISO (tests/iso_standin.py): the image package
# linux-image-amd64 depends on, unpacked into /opt/moat-tools/kernel without installing it
# (this machine's /boot and bootloader are not touched). Idempotent.
set -eu
. "$(dirname "$0")/lib/unpack-deb.sh"
depends() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: *\(linux-image-[^ ]*\)$/\1/p' | head -n 1; }
package=$(depends)
[ -n "$package" ] || { apt-get update -qq; package=$(depends); }
[ -n "$package" ] || { echo "iso.sh: no linux-image-amd64 in apt's sources" >&2; exit 1; }
unpack_deb "$package" /opt/moat-tools/kernel
ls /opt/moat-tools/kernel/boot/vmlinuz-*
