# shellcheck shell=bash
# Sourced by tests/system/*.sh: install Debian packages WITHOUT starting their services.
# Installing a daemon normally starts it (an sshd on port 22, a firewalld taking over the
# firewall, a haproxy listening): the tests only need the binaries.
#
#   install_quietly "UNIT..." PACKAGE...
#
# installs the PACKAGEs that are missing under a policy-rc.d that exits 101 (invoke-rc.d and
# deb-systemd-invoke then start nothing; any existing policy-rc.d is restored afterwards),
# then, where systemd runs, disables and stops the UNITs of what it installed. Packages that
# were already installed, and their services, are left alone. Idempotent.
install_quietly() {
    local units=$1
    shift
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed' || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "missing Debian packages: ${missing[*]} (run make system-deps as root)" >&2
        return 1
    fi
    local policy=/usr/sbin/policy-rc.d saved
    saved=$(mktemp)
    if [ -e "$policy" ]; then cp -p "$policy" "$saved"; else rm -f "$saved"; fi
    printf '#!/bin/sh\n# tests/system: no service starts while test packages are installed\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    echo "installing without starting their services: ${missing[*]}"
    local status=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || status=$?
    if [ -e "$saved" ]; then mv "$saved" "$policy"; else rm -f "$policy"; fi
    [ "$status" -eq 0 ] || return "$status"
    if [ -d /run/systemd/system ]; then
        local unit
        for unit in $units; do
            systemctl disable --now --quiet "$unit" 2>/dev/null || true
        done
    fi
}
