#!/bin/sh
# moat validator: a generated OpenVPN config (server or client), started for real.
# usage: vps-openvpn.sh FILE
# OpenVPN has no check mode, but it parses every option and loads every key before it does
# anything, and exits at once on a bad option or key. So a temporary copy of FILE (same line
# numbers) is started in a new, empty network namespace (unshare -rn: nothing of this
# machine's network is touched, no packet leaves) with:
#   - ca/cert/key/tls-crypt/crl-verify pointing at throwaway test PKI made here (EC CA, server
#     and client certificates, an empty CRL signed by the CA, a tls-crypt key); the real keys
#     exist only on the machines;
#   - client-config-dir pointing at the ccd/ directory beside FILE when there is one;
#   - user/group commented out (the namespace cannot switch to them).
# It is accepted once it got past that: a server reports "Initialization Sequence Completed"
# (tun device up, socket bound), a client starts talking to its remote. It is rejected when
# it exits first; its messages are printed with the copy's name replaced by FILE.
set -eu
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need openvpn openvpn
need openssl openssl
need util-linux unshare
need iproute2 ip
need dash sh
need coreutils mktemp rm mkdir cp cat head sleep dirname
need grep grep
need sed sed
needs_checked
[ $# -eq 1 ] || { echo "usage: $0 openvpn.conf" >&2; exit 2; }
file=$(absolute "$1")  # before the cd below
openvpn=$(command -v openvpn)
[ -f "$file" ] || { echo "$file: no such file" >&2; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-openvpn.XXXXXX")
pid=
cleanup() {
    if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp"
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
{
    # shellcheck disable=SC2086
    openssl req -x509 $ec -days 2 -subj /CN=moat-test-ca -keyout ca.key -out ca.crt \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign &&
    for role in server client; do
        [ $role = server ] && eku=serverAuth || eku=clientAuth
        # shellcheck disable=SC2086
        openssl req $ec -subj "/CN=moat-test-$role" -keyout $role.key -out $role.csr &&
        printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n' $eku >$role.ext &&
        openssl x509 -req -in $role.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
            -extfile $role.ext -out $role.crt || exit 1
    done &&
    printf '[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\ndefault_md = sha256\n' >ca.cnf && : >index.txt &&
    openssl ca -batch -config ca.cnf -gencrl -crldays 2 -cert ca.crt -keyfile ca.key -out crl.pem
} >pki.log 2>&1 || { cat pki.log >&2; missing openssl -- "openssl could not make the test PKI"; }
"$openvpn" --genkey secret tls-crypt.key >/dev/null 2>&1 || missing openvpn -- "openvpn --genkey failed"
if grep -Eq '^[[:space:]]*client([[:space:]]|$)' "$file"; then role=client; else role=server; fi
mkdir ccd
ccd=$(dirname "$file")/ccd
if [ -d "$ccd" ]; then cp "$ccd"/* ccd/ 2>/dev/null || true; fi
sed -E "s#^([[:space:]]*)(ca|cert|key|tls-crypt|crl-verify)[[:space:]].*#\\1\\2 $tmp/PKI_\\2#;
        s#PKI_ca\$#ca.crt#; s#PKI_cert\$#$role.crt#; s#PKI_key\$#$role.key#; s#PKI_tls-crypt\$#tls-crypt.key#;
        s#PKI_crl-verify\$#crl.pem#;
        s#^([[:space:]]*)(client-config-dir)[[:space:]].*#\\1\\2 $tmp/ccd#;
        s#^([[:space:]]*)(user|group)([[:space:]])#\\1\\# \\2\\3#" "$file" >conf
if [ "$role" = server ]; then ready='Initialization Sequence Completed'
else ready='UDPv?[46]? link remote|Attempting to establish TCP connection|TCP connection established'; fi
# a server bound to its public address (`local`) finds it on the namespace's loopback
local=$(sed -nE 's/^[[:space:]]*local[[:space:]]+([0-9.]+)[[:space:]]*$/\1/p' conf | head -n 1)
: >out  # there before the first look below, not when the started process gets to open it
# shellcheck disable=SC2016
unshare --map-root-user --net sh -c 'ip link set lo up && { [ -z "$1" ] || ip addr add "$1/32" dev lo; } &&
    exec "$2" --config "$3"' sh "$local" "$openvpn" "$tmp/conf" >>out 2>&1 &
pid=$!
status=1
i=0
while [ $i -lt 100 ]; do
    if grep -Eq "$ready" out; then status=0; break; fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.05
    i=$((i + 1))
done
[ $i -lt 100 ] || echo "openvpn neither failed nor became ready within 5 s" >>out
if [ "$status" != 0 ]; then
    sed "s#$tmp/conf#$file#g" out
fi
exit "$status"
