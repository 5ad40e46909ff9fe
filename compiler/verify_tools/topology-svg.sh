#!/bin/sh
# moat validator: the topology picture (topology.svg) drawn by librsvg's rsvg-convert into a PNG.
# usage: topology-svg.sh FILE
# rsvg-convert refuses a file that is not well-formed XML or not SVG (exit status 1, with the
# parser's message); a file it draws must give a non-empty PNG. The PNG goes to a temporary
# directory and is removed: only the verdict matters here.
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need librsvg2-bin rsvg-convert
need coreutils mktemp rm head tail
needs_checked
[ $# -eq 1 ] || { echo "usage: $0 FILE" >&2; exit 2; }
file=$(absolute "$1")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-svg.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
rsvg-convert --format=png --output="$tmp/picture.png" "$file" || { starts librsvg2-bin rsvg-convert --version; exit 1; }
# a PNG starts with \211PNG
[ "$(head -c 4 "$tmp/picture.png" | tail -c 3)" = PNG ] || { echo "$file: rsvg-convert wrote no PNG" >&2; exit 1; }
