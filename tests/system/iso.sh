#!/bin/sh
# Debian's kernel for the stand-in installer ISO (tests/iso_standin.py): the image package
# linux-image-amd64 depends on, downloaded and unpacked into /opt/moat-tools/kernel without
# installing it (this machine's /boot and bootloader are not touched). Idempotent: does
# nothing when the unpacked package is the current dependency.
set -eu
dest=/opt/moat-tools/kernel
package=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: *\(linux-image-[^ ]*\)$/\1/p' | head -n 1)
if [ -z "$package" ]; then
    apt-get update -qq
    package=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: *\(linux-image-[^ ]*\)$/\1/p' | head -n 1)
fi
[ -n "$package" ] || { echo "iso.sh: no linux-image-amd64 in apt's sources" >&2; exit 1; }
version=$(apt-cache policy "$package" | sed -n 's/^ *Candidate: *//p')
if [ "$(cat "$dest/.version" 2>/dev/null)" = "$package=$version" ] && ls "$dest"/boot/vmlinuz-* >/dev/null 2>&1; then
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp"  # apt's sandbox user downloads into it
(cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$package=$version" >/dev/null)
rm -rf "$dest.new"
mkdir -p "$dest.new"
dpkg-deb -x "$tmp"/"$package"_*.deb "$dest.new"
echo "$package=$version" >"$dest.new/.version"
rm -rf "$dest"
mv "$dest.new" "$dest"
ls "$dest"/boot/vmlinuz-*
