#!/bin/sh
# moat validator: the topology picture (topology.svg) drawn by librsvg's rsvg-convert into a PNG.
# usage: topology-svg.sh FILE
# rsvg-convert refuses a file that is not well-formed XML or not SVG (exit status 1, with the
# parser's message); a file it draws must give a non-empty PNG. The PNG goes to a temporary
# directory and is removed: only the verdict matters here. librsvg draws at most 32767 pixels a
# side, a limit of its raster, not of SVG (browsers show the picture of 1000 VMs, 150,000 pixels
# wide): a picture declared larger than 16384 pixels is drawn scaled to that, aspect kept.
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need librsvg2-bin rsvg-convert
need coreutils mktemp rm head tail
need sed sed
needs_checked
[ $# -eq 1 ] || { echo "usage: $0 FILE" >&2; exit 2; }
file=$(absolute "$1")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-svg.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# the root element's width="W" height="H", as moat writes them (whole pixels)
size=$(sed -n 's/^<svg [^>]*width="\([0-9]*\)" height="\([0-9]*\)".*/\1 \2/p' "$file" | head -n 1)
bound=
case $size in
    *[0-9]\ [0-9]*)
        width=${size% *} height=${size#* }
        if [ "$width" -ge "$height" ] && [ "$width" -gt 16384 ]; then bound="--width=16384 --keep-aspect-ratio"
        elif [ "$height" -gt 16384 ]; then bound="--height=16384 --keep-aspect-ratio"; fi ;;
esac
# shellcheck disable=SC2086  # $bound is zero or two options
rsvg-convert --format=png $bound --output="$tmp/picture.png" "$file" || { starts librsvg2-bin rsvg-convert --version; exit 1; }
# a PNG starts with \211PNG
[ "$(head -c 4 "$tmp/picture.png" | tail -c 3)" = PNG ] || { echo "$file: rsvg-convert wrote no PNG" >&2; exit 1; }
