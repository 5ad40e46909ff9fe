# Sourced by the cloud-init validators: defines cloud_init(), the cloud-init to run.
# Debian's package unpacked (not installed) under $MOAT_CLOUD_INIT_ROOT (default
# /opt/moat-tools/cloud-init, made by tests/system/install.sh) and run by the system python3,
# else a cloud-init on PATH; exits 127 when there is none.
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
