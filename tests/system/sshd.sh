#!/bin/bash
# sshd family: install openssh-server (sshd -t, the loopback sshd) and fail2ban
# (fail2ban-client -t, fail2ban-regex) for the tests WITHOUT starting or enabling their
# services: installing them from a .debs list would start an sshd on port 22 and a
# fail2ban daemon on the test machine. Packages already installed (the admin's own sshd)
# are left alone. Idempotent.
set -euo pipefail
declare -A units=([openssh-server]="ssh.service ssh.socket" [fail2ban]="fail2ban.service")
missing=()
for pkg in openssh-server fail2ban; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages (run as root, or: sudo apt-get install ${missing[*]}, then stop and disable ssh and fail2ban)"
    exit 1
fi
# policy-rc.d exiting 101 tells invoke-rc.d and deb-systemd-invoke not to start services
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi
echo "installing test packages without starting their services: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
for pkg in "${missing[@]}"; do
    for unit in ${units[$pkg]}; do
        # not at boot either; stop it in case a local policy-rc.d let it start
        systemctl disable --quiet "$unit" 2>/dev/null || true
        systemctl stop --quiet "$unit" 2>/dev/null || true
    done
done
