# shellcheck shell=sh
# Sourced by the cloud-init validators (after lib.sh): defines cloud_init(), the cloud-init to run,
# cloud_init_many CHECK FILE... (cloudinit-many.py: one Python for many files, when
# cloud-init's modules can be imported; else one cloud_init run per file), cloud_init_quick
# CHECK FILE (silent, status 0 when the file passes: one Python start, where the single-file
# check with its messages costs two or three), and cloud_init_starts, to call when a check
# failed: exits 69 when cloud-init cannot even start.
# Debian's package unpacked (not installed) under $MOAT_CLOUD_INIT_ROOT (default
# /opt/moat-tools/cloud-init, made by tests/system/install.sh) and run by the system python3
# with Debian's modules, else a cloud-init on PATH. Without one, or when it cannot start (a
# module it imports is missing), the cloud-init packages are missing (exit 69, see lib.sh).
root=${MOAT_CLOUD_INIT_ROOT:-/opt/moat-tools/cloud-init}
if [ -f "$root/usr/bin/cloud-init" ]; then
    need python3 /usr/bin/python3
    cloud_init() {
        PYTHONPATH="$root/usr/lib/python3/dist-packages" /usr/bin/python3 "$root/usr/bin/cloud-init" "$@"
    }
    cloud_init_many() {
        PYTHONPATH="$root/usr/lib/python3/dist-packages" /usr/bin/python3 "${0%/*}/cloudinit-many.py" "$@"
    }
    cloud_init_quick() {
        cloud_init_many "$@" >/dev/null 2>&1
    }
    # the modules `cloud-init schema` and `devel net-convert` import, by Debian package: asked
    # by `moat verify --tools`, and when a check failed (cloud_init_starts): another Python
    # start, which a file that passes does not pay for
    cloud_init_starts() {
        absent=$(PYTHONPATH="$root/usr/lib/python3/dist-packages" /usr/bin/python3 -c '
import importlib
for module, package in (("yaml", "python3-yaml"), ("jsonschema", "python3-jsonschema"), ("jinja2", "python3-jinja2"),
                        ("configobj", "python3-configobj"), ("requests", "python3-requests"),
                        ("jsonpatch", "python3-jsonpatch"), ("cloudinit.cmd.main", "cloud-init")):
    try:
        importlib.import_module(module)
    except Exception:
        print(package)
' 2>/dev/null) || absent="cloud-init"
        [ -z "$absent" ] || missing $absent -- "cloud-init in $root cannot start without them"
    }
    [ "${MOAT_NEEDS_ONLY:-}" != 1 ] || cloud_init_starts
elif command -v cloud-init >/dev/null 2>&1; then
    need sed sed
    cloud_init() {
        cloud-init "$@"
    }
    cloud_init_starts() {
        :  # a failure is cloud-init's verdict
    }
    cloud_init_quick() {
        # cloudinit-many.py under the interpreter cloud-init's own first line names; when that
        # cannot import cloud-init, the single-file check says why
        python=$(sed -n '1s/^#! *//p' "$(command -v cloud-init)")
        [ -n "$python" ] && $python "${0%/*}/cloudinit-many.py" "$@" >/dev/null 2>&1
    }
    cloud_init_many() {
        # the interpreter cloud-init's own first line names, when it has cloud-init's modules
        python=$(sed -n '1s/^#! *//p' "$(command -v cloud-init)")
        if [ -n "$python" ] && $python -c 'import cloudinit.cmd.main' >/dev/null 2>&1; then
            $python "${0%/*}/cloudinit-many.py" "$@"
            return
        fi
        shift  # else the wrapper itself, once per file
        status=0
        for f in "$@"; do "$0" "$f" || status=1; done
        return "$status"
    }
else
    missing cloud-init -- "cloud-init is neither in $root (tests/system/install.sh unpacks it there) nor on PATH"
fi
