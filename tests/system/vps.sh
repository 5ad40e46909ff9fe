#!/bin/bash
# haproxy and openvpn (validators and the behavioural test, which runs haproxy inside network
# namespaces it creates) come from Debian; their services would listen on this machine:
# installed without starting them. Idempotent.
set -euo pipefail
. "$(dirname "$0")/lib/install-quietly.sh"
install_quietly "haproxy.service openvpn.service" haproxy openvpn
# certbot (the cli.ini validator, compiler/verify_tools/vps-certbot.sh): its package enables and
# starts certbot.timer, which would run `certbot renew` twice a day on the test machine
install_quietly "certbot.timer" certbot
