#!/bin/sh
# Debian's cloud-init 22.4 for `cloud-init schema` (not on PyPI), unpacked into
# /opt/moat-tools/cloud-init without installing the package: no services, no generators, no
# datasource probing on this machine. compiler/verify_tools/cloudinit-schema.sh runs it with
# the system python3 and the modules of install.debs. Idempotent: does nothing when the
# unpacked version is the candidate version.
set -eu
dest=/opt/moat-tools/cloud-init
version=$(apt-cache policy cloud-init | sed -n 's/^ *Candidate: *//p')
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    apt-get update -qq
    version=$(apt-cache policy cloud-init | sed -n 's/^ *Candidate: *//p')
fi
[ -n "$version" ] && [ "$version" != "(none)" ] || { echo "install.sh: no cloud-init package in apt's sources" >&2; exit 1; }
if [ -x "$dest/usr/bin/cloud-init" ] && [ "$(cat "$dest/.version" 2>/dev/null)" = "$version" ]; then
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp"  # apt's sandbox user downloads into it
(cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "cloud-init=$version" >/dev/null)
rm -rf "$dest.new"
mkdir -p "$dest.new"
dpkg-deb -x "$tmp"/cloud-init_*.deb "$dest.new"
echo "$version" >"$dest.new/.version"
rm -rf "$dest"
mv "$dest.new" "$dest"
PYTHONPATH="$dest/usr/lib/python3/dist-packages" /usr/bin/python3 "$dest/usr/bin/cloud-init" --version
