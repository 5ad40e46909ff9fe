#!/bin/bash
# A stranger's machine, for tests/test_fresh_machine.py, which runs the README's commands in it:
# a stock Debian 12 (debootstrap minbase) with only python3, make and git (and ca-certificates,
# which `apt-get install git` brings as a recommendation, for cloning over https). Nothing else:
# what `make bundle` needs beyond that, the Makefile must install itself. Built once per machine
# (lib/debian-root.sh) as /opt/moat-tools/bookworm-fresh.tar.zst; its sources.list is debootstrap's
# own (the mirror of this machine's apt). Idempotent; run as root by `make system-deps`.
set -euo pipefail
# shellcheck source=tests/system/lib/debian-root.sh
. "$(dirname "$0")/lib/debian-root.sh"
debian_root bookworm-fresh "python3 make git ca-certificates"
