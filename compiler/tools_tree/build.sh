#!/bin/sh
# moat tools tree builder: a Debian root holding moat's validators, built into DEST.
# usage: build.sh DEST RELEASE MIRROR DEBS PYPI PROGRAMS
#   DEBS, PYPI (name==version) and PROGRAMS are space-separated lists; WHEELS (env) is a
#   directory with PYPI's wheels, downloaded beforehand by moat's own pip (no network in here); DEBCACHE (env, optional)
#   is a directory kept between builds where downloaded .debs are reused.
# Runs as root inside a private mount namespace (build.py starts it with unshare --mount), so
# every mount below disappears with the process, however it ends. Prints one `step N/5 ...`
# line per phase on stdout (the progress moat shows); everything else goes to stderr (the log).
set -eu
[ $# -eq 6 ] || { echo "usage: $0 DEST RELEASE MIRROR DEBS PYPI PROGRAMS" >&2; exit 2; }
dest=$1 release=$2 mirror=$3 debs=$4 pypi=$5 programs=$6
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount --make-rprivate / 2>/dev/null || true

echo "step 1/5 debootstrap $release (minbase) from $mirror"
cache_opt=
if [ -n "${DEBCACHE:-}" ]; then mkdir -p "$DEBCACHE"; cache_opt="--cache-dir=$DEBCACHE"; fi
# shellcheck disable=SC2086
debootstrap --variant=minbase $cache_opt "$release" "$dest" "$mirror" >&2

echo "step 2/5 apt-get install $(echo "$debs" | wc -w) packages"
security=${mirror%/debian}/debian-security
cat >"$dest/etc/apt/sources.list" <<SOURCES
deb $mirror $release main
deb $mirror $release-updates main
deb $security $release-security main
SOURCES
# nothing starts in the tree: it is a place to run tools, not a system
printf '#!/bin/sh\nexit 101\n' >"$dest/usr/sbin/policy-rc.d"
chmod 0755 "$dest/usr/sbin/policy-rc.d"
mount --rbind /dev "$dest/dev"
mount -t proc proc "$dest/proc"
mount -t tmpfs tmpfs "$dest/tmp"
cp /etc/resolv.conf "$dest/etc/resolv.conf" 2>/dev/null || true
if [ -n "${DEBCACHE:-}" ]; then mount --bind "$DEBCACHE" "$dest/var/cache/apt/archives"; fi
chroot "$dest" apt-get update -qq >&2 || chroot "$dest" apt-get update -qq >&2
# shellcheck disable=SC2086
chroot "$dest" apt-get install -y -q --no-install-recommends $debs >&2

echo "step 3/5 pip install $pypi"
if [ -n "$pypi" ]; then
    mkdir -p "$dest/tmp/wheels"
    cp "$WHEELS"/*.whl "$dest/tmp/wheels/"
    # shellcheck disable=SC2086
    chroot "$dest" python3 -m pip install -q --no-cache-dir --break-system-packages --no-index \
        --find-links /tmp/wheels --root-user-action=ignore --no-warn-script-location $pypi >&2
fi

echo "step 4/5 self-check: $(echo "$programs" | wc -w) programs"
missing=
for program in $programs; do
    # shellcheck disable=SC2016
    chroot "$dest" sh -c 'command -v "$1"' sh "$program" >/dev/null || missing="$missing $program"
done
[ -z "$missing" ] || { echo "build.sh: not in the tree after install:$missing" >&2; exit 1; }

echo "step 5/5 tidy"
if [ -n "${DEBCACHE:-}" ]; then umount "$dest/var/cache/apt/archives"; fi
umount "$dest/tmp" 2>/dev/null || true
umount -l "$dest/proc" "$dest/dev"
chroot "$dest" apt-get clean
rm -rf "$dest/var/lib/apt/lists/"* "$dest/tmp/"* "$dest/usr/sbin/policy-rc.d"
: >"$dest/etc/resolv.conf"
# throwaway host keys the openssh-server package made: the checks make their own
rm -f "$dest"/etc/ssh/ssh_host_*
mkdir -p "$dest/moat/bundle" "$dest/moat/verify_tools"
# shellcheck disable=SC2016
chroot "$dest" dpkg-query -W -f '${Package}\t${Version}\n' >"$dest/etc/moat-tools.debs"
