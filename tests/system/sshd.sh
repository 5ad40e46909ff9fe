#!/bin/bash
# sshd family: openssh-server (sshd -t, the loopback sshd) and fail2ban (fail2ban-client -t)
# for the tests, without starting or enabling their services: from a .debs list they would
# start an sshd on port 22 and a fail2ban daemon on the test machine. Idempotent.
set -euo pipefail
. "$(dirname "$0")/lib/install-quietly.sh"
install_quietly "ssh.service ssh.socket fail2ban.service" openssh-server fail2ban
