# shellcheck shell=sh
# Sourced by tests/system/*.sh: a Debian package's files for the tests, without installing it.
#
#   unpack_deb PACKAGE DEST
#
# downloads the candidate version of PACKAGE and unpacks it into DEST (replaced atomically),
# stamped DEST/.version = PACKAGE=VERSION; does nothing when that version is already there.
# Nothing of the package runs: no maintainer scripts, services or generators on this machine.
unpack_deb() {
    _pkg=$1 _dest=$2
    _version=$(apt-cache policy "$_pkg" | sed -n 's/^ *Candidate: *//p')
    if [ -z "$_version" ] || [ "$_version" = "(none)" ]; then
        apt-get update -qq
        _version=$(apt-cache policy "$_pkg" | sed -n 's/^ *Candidate: *//p')
    fi
    [ -n "$_version" ] && [ "$_version" != "(none)" ] || { echo "no $_pkg package in apt's sources" >&2; return 1; }
    [ "$(cat "$_dest/.version" 2>/dev/null)" = "$_pkg=$_version" ] && return 0
    _tmp=$(mktemp -d)
    chmod 0755 "$_tmp"  # apt's sandbox user downloads into it
    if (cd "$_tmp" && apt-get download -q -o APT::Sandbox::User=root "$_pkg=$_version" >/dev/null); then
        rm -rf "$_dest.new"
        mkdir -p "$_dest.new"
        dpkg-deb -x "$_tmp/${_pkg}"_*.deb "$_dest.new"
        echo "$_pkg=$_version" >"$_dest.new/.version"
        rm -rf "$_dest"
        mv "$_dest.new" "$_dest"
        rm -rf "$_tmp"
    else
        rm -rf "$_tmp"
        return 1
    fi
}
