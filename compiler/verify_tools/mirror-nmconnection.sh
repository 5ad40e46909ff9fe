#!/bin/sh
# moat validator: a NetworkManager keyfile (*.nmconnection), read by NetworkManager's own code.
# usage: mirror-nmconnection.sh FILE          check FILE; messages are FILE:LINE: ...
#        mirror-nmconnection.sh --show FILE   print the connection as NetworkManager reads it
#                                             (libnm's keyfile writer: defaults left out)
# NetworkManager has no check mode, and `nmcli --offline` reads a keyfile but drops what it
# cannot parse without a word. This runs libnm (the library whose keyfile reader the daemon
# uses; Debian: gir1.2-nm-1.0 + python3-gi) and rejects the file when
#   - GLib's key-file parser fails (syntax),
#   - the keyfile reader warns (unknown setting, value it cannot interpret, ...) or fails,
#   - the connection does not verify (nm_connection_verify: invalid type, method, name, uuid, ...),
#   - a key has no effect although it is no property of its setting: the daemon would ignore
#     it silently (a misspelt key), found by reading the file again without that key.
# The daemon's other rule, owner root and mode 0600, applies where the file is installed.
set -eu
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need python3 /usr/bin/python3
# libnm is checked by the script below, which stops there with MOAT_NEEDS_ONLY=1
if [ "${MOAT_NEEDS_ONLY:-}" != 1 ]; then
    case ${1:-} in
        --show) [ $# -eq 2 ] && set -- --show "$(absolute "$2")" ;;
        *) [ $# -eq 1 ] && set -- "$(absolute "$1")" ;;
    esac || { echo "usage: $0 [--show] FILE" >&2; exit 2; }
fi
MOAT_TOOL_MISSING=$MOAT_TOOL_MISSING exec /usr/bin/python3 - "$@" <<'EOF'
import os
import re
import sys

try:
    import gi
    gi.require_version("NM", "1.0")
    from gi.repository import GLib, NM
except Exception as err:  # absent or unusable: not this file's fault (see lib.sh)
    print(f"mirror-nmconnection.sh: libnm is not available ({err})", file=sys.stderr)
    print("moat-tool-missing: gir1.2-nm-1.0 python3-gi", file=sys.stderr)
    sys.exit(int(os.environ["MOAT_TOOL_MISSING"]))
if os.environ.get("MOAT_NEEDS_ONLY") == "1":
    sys.exit(0)

show = sys.argv[1] == "--show"
path = sys.argv[2] if show else sys.argv[1]
text = open(path, encoding="utf-8").read()
problems = []


def line_of(group, key=None, needle=None):
    """1-based line of [group] (or of its `key=`), or of the line whose text is `needle`; 0 if unknown."""
    current = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if needle is not None:
            if line == needle.strip():
                return number
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            if key is None and current == group:
                return number
        elif key is not None and current == group and line.split("=", 1)[0].strip() == key:
            return number
    return 0


def report(number, message):
    problems.append(f"{path}:{number}: {message}" if number else f"{path}: {message}")


def load(drop=None):
    keyfile = GLib.KeyFile()
    keyfile.load_from_data(text, len(text.encode()), GLib.KeyFileFlags.NONE)
    if drop:
        keyfile.remove_key(*drop)
    return keyfile


def read(keyfile, warn):
    def handler(_keyfile, _flags, kind, data, _error, *_user):
        if kind == NM.KeyfileHandlerType.WARN:
            message, _severity = data.warn_get()
            group, key, _setting, _property = data.get_context()
            warn(line_of(group, key) if group and key else line_of(group) if group else 0, message)
        return True

    return NM.keyfile_read(keyfile, os.path.dirname(os.path.abspath(path)), NM.KeyfileHandlerFlags.NONE, handler, None)


try:
    keyfile = load()
except GLib.Error as err:
    quoted = re.search("\u201c(.*)\u201d", err.message)
    report(line_of(None, needle=quoted.group(1)) if quoted else 0, err.message)
    keyfile = None

connection = None
if keyfile is not None:
    try:
        connection = read(keyfile, report)
    except GLib.Error as err:
        report(0, err.message)

if connection is not None and show:
    written = NM.keyfile_write(connection, NM.KeyfileHandlerFlags.NONE, None, None)
    sys.stdout.write(written.to_data()[0])
    sys.exit(0)

if connection is not None:
    try:
        connection.verify()
    except GLib.Error as err:
        where = re.match(r"([a-z0-9-]+)\.([a-z0-9-]+):", err.message)
        report(line_of(*where.groups()) if where else 0, err.message)
    for group in keyfile.get_groups()[0]:
        setting = connection.get_setting_by_name(group)
        known = {spec.name for spec in setting.list_properties()} if setting is not None else set()
        for key in keyfile.get_keys(group)[0]:
            if key in known:
                continue
            try:
                again = read(load(drop=(group, key)), lambda *_: None)
            except GLib.Error:
                continue  # the key matters: the file does not even read without it
            if again.compare(connection, NM.SettingCompareFlags.EXACT):
                report(line_of(group, key), f"NetworkManager ignores key '{key}' in [{group}]: "
                       f"no such property of setting '{group}', and it changes nothing")

for problem in problems:
    print(problem)
sys.exit(1 if problems else 0)
EOF
