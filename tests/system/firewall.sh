#!/bin/bash
# firewall-offline-cmd (validator) and firewalld (behavioural test, run inside a network
# namespace) come from Debian's firewalld package. Installing it normally starts the daemon,
# which would take over this machine's firewall: install it with a policy-rc.d that forbids
# starting services, and mask the unit where systemd runs. Idempotent: does nothing when
# firewall-offline-cmd is already there, and never stops a firewalld it did not install.
set -euo pipefail

if command -v firewall-offline-cmd >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "firewalld is missing: run as root (make system-deps), or: sudo tests/system/firewall.sh" >&2
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
printf '#!/bin/sh\n# tests/system/firewall.sh: no service starts while firewalld is installed\nexit 101\n' >"$policy"
chmod 755 "$policy"

echo "installing firewalld (its service is not started)"
export DEBIAN_FRONTEND=noninteractive
apt_install() { apt-get install -y -qq --no-install-recommends firewalld >/dev/null; }
apt_install || { apt-get update -qq && apt_install; }

if [ -d /run/systemd/system ]; then
    systemctl mask --now firewalld.service >/dev/null 2>&1 || true
fi
if pgrep -x firewalld >/dev/null 2>&1; then
    echo "warning: a firewalld is running on this machine; it was not started by this script" >&2
fi
