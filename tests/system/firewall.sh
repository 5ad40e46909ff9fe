#!/bin/bash
# firewall-offline-cmd (validator) and firewalld (behavioural test, run inside a network
# namespace) come from Debian's firewalld, whose service would take over this machine's
# firewall: installed without starting it. Idempotent.
set -euo pipefail
. "$(dirname "$0")/lib/install-quietly.sh"
install_quietly "firewalld.service" firewalld
if pgrep -x firewalld >/dev/null 2>&1; then
    echo "warning: a firewalld is running on this machine; it was not started by this script" >&2
fi
