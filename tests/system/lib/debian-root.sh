# shellcheck shell=bash
# Sourced by tests/system/*.sh that make a Debian 12 root for a test (vps_chroot.sh, fresh_root.sh).
#
#   debian_root NAME PACKAGES [CUSTOMIZE]
#
# builds $MOAT_IMAGE_DIR/NAME.tar.zst (default /opt/moat-tools; numeric owners, device nodes):
# debootstrap --variant=minbase of bookworm with PACKAGES (space-separated), from the Debian
# mirror of this machine's apt sources, then CUSTOMIZE ROOT MIRROR, when given, is called with
# /dev and /proc mounted and the host's resolv.conf in the root (emptied again before packing).
# NAME.key beside it holds the sha256 of the recipe (the calling script and this file): the image
# is built once per machine and again only when the recipe changes; tests/debian_root.py checks
# the same key. The .debs debootstrap fetches are kept in $MOAT_DEB_CACHE (default
# /var/cache/moat-test/apt-archives, the fresh-machine test's apt cache too), not in the image,
# so a rebuild does not download them again. Run as root.
debian_root() {
    local name=$1 packages=$2 customize=${3:-}
    local out=${MOAT_IMAGE_DIR:-${MOAT_VPS_IMAGE_DIR:-/opt/moat-tools}}
    local debs=${MOAT_DEB_CACHE:-/var/cache/moat-test/apt-archives}
    local image=$out/$name.tar.zst stamp=$out/$name.key key
    key=$(cat "$0" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
    if [ -s "$image" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$key" ]; then
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || { echo "$(basename "$0"): run as root (make system-deps)" >&2; return 1; }
    local mirror
    mirror=$(debian_mirror)
    echo "$(basename "$0"): building $image from $mirror"
    _debian_root_work=$(mktemp -d /var/tmp/moat-root.XXXXXX)
    local root=$_debian_root_work/root
    trap '_debian_root_cleanup' EXIT
    mkdir -p "$debs/partial"
    debootstrap --variant=minbase --cache-dir="$debs" --include="${packages// /,}" bookworm "$root" "$mirror" \
        >"$_debian_root_work/debootstrap.log" 2>&1 ||
        { tail -n 30 "$_debian_root_work/debootstrap.log" >&2; return 1; }
    rm -f "$root"/var/cache/apt/archives/*.deb  # kept in $debs
    if [ -n "$customize" ]; then
        mount --bind /dev "$root/dev"
        mount -t proc proc "$root/proc"
        cp /etc/resolv.conf "$root/etc/resolv.conf"
        "$customize" "$root" "$mirror"
        : >"$root/etc/resolv.conf"
        umount "$root/proc" "$root/dev"
    fi
    mkdir -p "$out"
    tar --numeric-owner --xattrs -C "$root" -c . | zstd -q -T0 -3 -o "$_debian_root_work/image.tar.zst"
    mv -f "$_debian_root_work/image.tar.zst" "$image"
    echo "$key" >"$stamp"
    du -h "$image"
}

# the Debian mirror this machine's apt uses (deb822 or one-line sources)
debian_mirror() {
    local mirror
    mirror=$(sed -n 's/^URIs: *\(\S*\/debian\)$/\1/p; s/^deb \+\(\[[^]]*\] \+\)\?\(\S*\/debian\) .*/\2/p' \
        /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null |
        head -n 1 || true)
    echo "${mirror:-http://deb.debian.org/debian}"
}

_debian_root_cleanup() {
    local m
    for m in "$_debian_root_work/root/proc" "$_debian_root_work/root/dev"; do
        if mountpoint -q "$m" 2>/dev/null; then umount -l "$m"; fi
    done
    rm -rf "$_debian_root_work"
}
