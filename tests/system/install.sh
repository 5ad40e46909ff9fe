#!/bin/sh
# Debian's cloud-init 22.4 for `cloud-init schema` (not on PyPI), unpacked into
# /opt/moat-tools/cloud-init without installing the package: no services, no generators, no
# datasource probing on this machine. compiler/verify_tools/cloudinit-lib.sh runs it with
# the system python3 and the modules of install.debs. Idempotent.
set -eu
. "$(dirname "$0")/lib/unpack-deb.sh"
unpack_deb cloud-init /opt/moat-tools/cloud-init
PYTHONPATH=/opt/moat-tools/cloud-init/usr/lib/python3/dist-packages /usr/bin/python3 \
    /opt/moat-tools/cloud-init/usr/bin/cloud-init --version
