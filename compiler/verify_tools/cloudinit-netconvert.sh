#!/bin/sh
# moat validator: cloud-init's own reading of a generated network-config (version 2).
# usage: cloudinit-netconvert.sh FILE
# `cloud-init devel net-convert` parses the file as the NoCloud datasource does and renders
# it for systemd-networkd and for ifupdown (ENI), the renderers of Debian images; on Ubuntu,
# cloud-init hands version 2 to netplan as it is (see cloudinit-netplan.sh). Same cloud-init
# as cloudinit-schema.sh. Output goes to a temporary directory; exits non-zero when cloud-init
# cannot parse or render the file.
set -u
[ $# -eq 1 ] || { echo "usage: $0 network-config" >&2; exit 2; }
file=$1
root=${MOAT_CLOUD_INIT_ROOT:-/opt/moat-tools/cloud-init}
if [ -x "$root/usr/bin/cloud-init" ]; then
    cloud_init() {
        PYTHONPATH="$root/usr/lib/python3/dist-packages" /usr/bin/python3 "$root/usr/bin/cloud-init" "$@"
    }
elif command -v cloud-init >/dev/null 2>&1; then
    cloud_init() {
        cloud-init "$@"
    }
else
    echo "cloud-init not found in $root nor on PATH: run tests/system/install.sh" >&2
    exit 127
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-netconvert.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
rc=0
for renderer in networkd eni; do
    if ! out=$(cloud_init devel net-convert --network-data "$file" --kind yaml --distro debian \
            --output-kind "$renderer" --directory "$tmp/$renderer" 2>&1); then
        # the last line of cloud-init's traceback is the reason
        echo "$file: cloud-init cannot render it for $renderer: $(printf '%s\n' "$out" | tail -n 1)" >&2
        rc=1
    fi
done
exit "$rc"
