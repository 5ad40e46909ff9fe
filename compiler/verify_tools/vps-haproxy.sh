#!/bin/sh
# moat validator: haproxy -c on a generated haproxy.cfg.
# usage: vps-haproxy.sh FILE
# haproxy -c loads every certificate a `bind ... crt` names, and the real PEMs only exist on
# the VPS (the certbot deploy hook writes them). So the check runs on a temporary copy in
# which /etc/haproxy/certs is replaced by a directory holding one throwaway self-signed
# EC certificate (same line numbers), and the copy's name is replaced by FILE in haproxy's
# messages ("[FILE:LINE]"). Exits non-zero when haproxy rejects the file.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 haproxy.cfg" >&2; exit 2; }
file=$1
haproxy=$(PATH="$PATH:/usr/sbin:/sbin" command -v haproxy) || {
    echo "haproxy not found: apt-get install haproxy" >&2; exit 127; }
[ -f "$file" ] || { echo "$file: no such file" >&2; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-haproxy.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=moat-verify.invalid -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1 || {
    echo "openssl could not make a test certificate" >&2; exit 2; }
cat "$tmp/cert.pem" "$tmp/key.pem" >"$tmp/certs/moat-verify.pem"
sed "s#/etc/haproxy/certs#$tmp/certs#g" "$file" >"$tmp/haproxy.cfg"
status=0
"$haproxy" -c -f "$tmp/haproxy.cfg" >"$tmp/out" 2>&1 || status=$?
sed "s#$tmp/haproxy.cfg#$file#g; s#$tmp/certs#/etc/haproxy/certs#g" "$tmp/out"
exit "$status"
