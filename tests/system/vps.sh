#!/bin/bash
# haproxy and openvpn (validators and the behavioural test, which runs haproxy inside network
# namespaces it creates) come from Debian. Installing them normally starts haproxy.service
# (listening on this machine) and openvpn.service: install them with a policy-rc.d that
# forbids starting services, and mask the units where systemd runs. Idempotent: does nothing
# when both are installed, and never stops a daemon it did not install.
set -euo pipefail

missing=()
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v openvpn >/dev/null 2>&1 || [ -x /usr/sbin/openvpn ] || missing+=(openvpn)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "${missing[*]} missing: run as root (make system-deps), or: sudo tests/system/vps.sh" >&2
    exit 1
fi

policy=/usr/sbin/policy-rc.d
saved=$(mktemp)
had_policy=no
if [ -e "$policy" ]; then
    cp -p "$policy" "$saved"
    had_policy=yes
fi
restore() {
    if [ "$had_policy" = yes ]; then cp -p "$saved" "$policy"; else rm -f "$policy"; fi
    rm -f "$saved"
}
trap restore EXIT
printf '#!/bin/sh\n# tests/system/vps.sh: no service starts while haproxy/openvpn are installed\nexit 101\n' >"$policy"
chmod 755 "$policy"

echo "installing ${missing[*]} (their services are not started)"
export DEBIAN_FRONTEND=noninteractive
apt_install() { apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
apt_install || { apt-get update -qq && apt_install; }

if [ -d /run/systemd/system ]; then
    systemctl mask --now haproxy.service >/dev/null 2>&1 || true
fi
