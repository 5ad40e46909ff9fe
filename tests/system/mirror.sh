#!/bin/bash
# The mirror family's keyfile test runs a real NetworkManager in its own namespaces; the
# package's service would manage this machine's network: installed without starting it.
set -euo pipefail
. "$(dirname "$0")/lib/install-quietly.sh"
install_quietly "NetworkManager.service NetworkManager-wait-online.service" network-manager
