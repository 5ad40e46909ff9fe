#!/bin/sh
# moat validator: haproxy -c on a generated haproxy.cfg.
# usage: vps-haproxy.sh FILE
# haproxy -c loads every certificate a `bind ... crt` names, and the real PEMs only exist on
# the VPS (the certbot deploy hook writes them). So the check runs on a temporary copy in
# which /etc/haproxy/certs is replaced by a directory holding one throwaway self-signed
# EC certificate (same line numbers), and the copy's name is replaced by FILE in haproxy's
# messages ("[FILE:LINE]"). Exits non-zero when haproxy rejects the file.
set -eu
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need haproxy haproxy
need openssl openssl
need coreutils mktemp rm mkdir cat
need sed sed
needs_checked
[ $# -eq 1 ] || { echo "usage: $0 haproxy.cfg" >&2; exit 2; }
file=$(absolute "$1")
haproxy=$(command -v haproxy)
[ -f "$file" ] || { echo "$file: no such file" >&2; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-haproxy.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=moat-verify.invalid -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1 || {
    missing openssl -- "openssl could not make a test certificate"; }
cat "$tmp/cert.pem" "$tmp/key.pem" >"$tmp/certs/moat-verify.pem"
sed "s#/etc/haproxy/certs#$tmp/certs#g" "$file" >"$tmp/haproxy.cfg"
status=0
"$haproxy" -c -f "$tmp/haproxy.cfg" >"$tmp/out" 2>&1 || status=$?
sed "s#$tmp/haproxy.cfg#$file#g; s#$tmp/certs#/etc/haproxy/certs#g" "$tmp/out"
exit "$status"
