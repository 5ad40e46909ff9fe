#!/bin/sh
# moat validator: a generated /etc/dnf/automatic.conf, read the way dnf-automatic reads it.
# usage: updates-dnf-automatic.sh FILE
# dnf is not on Debian, so this is a model of dnf-automatic 4.15+ (RHEL 9.3+; dnf/automatic/main.py
# and libdnf's INI parser), in python3:
# - INI as libdnf reads it: `[section]` lines, `key = value` lines, `#`/`;` comment lines; a
#   key before any section, a line of neither kind or a key given twice is a rejection;
# - only dnf-automatic's sections; in them only its options (dnf-automatic ignores an unknown
#   option silently, which would turn a typo into a policy nobody wrote); [base] is dnf.conf's
#   and not checked here;
# - every value as libdnf's option type parses it: booleans, integers, the enumerations
#   (upgrade_type, reboot) and emit_via's emitters.
# Prints "FILE:LINE: message" for each problem and exits 1 when there is one.
set -eu
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need python3 python3
needs_checked
[ $# -eq 1 ] || { echo "usage: $0 automatic.conf" >&2; exit 2; }
file=$(absolute "$1")
exec python3 - "$file" <<'PYTHON'
import re
import sys

BOOL = {"1", "0", "yes", "no", "true", "false", "on", "off"}  # libdnf OptionBool, any case
INT = "int"
STR = "str"
EMITTERS = {"email", "stdio", "motd", "command", "command_email"}
OPTIONS = {
    "commands": {"apply_updates": BOOL, "base_config_file": STR, "download_updates": BOOL,
                 "upgrade_type": {"default", "security"}, "random_sleep": INT, "network_online_timeout": INT,
                 "reboot": {"never", "when-changed", "when-needed"}, "reboot_command": STR},
    "emitters": {"emit_via": "emitters", "output_width": INT, "system_name": STR},
    "email": {"email_to": STR, "email_from": STR, "email_host": STR, "email_port": INT},
    "command": {"command_format": STR, "stdin_format": STR},
    "command_email": {"command_format": STR, "stdin_format": STR, "email_to": STR, "email_from": STR},
    "base": None,  # dnf.conf's options
}

path = sys.argv[1]
problems = []
section = None
seen = {}
with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
for n, raw in enumerate(lines, 1):
    line = raw.strip()
    if not line or line[0] in "#;":
        continue
    where = f"{path}:{n}"
    m = re.fullmatch(r"\[([^\]]+)\]", line)
    if m:
        section = m.group(1).strip()
        if section not in OPTIONS:
            problems.append(f"{where}: unknown section [{section}] (dnf-automatic reads {', '.join(sorted(OPTIONS))})")
        continue
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*=\s*(.*)", line)
    if not m:
        problems.append(f"{where}: neither [section] nor key = value: {line!r}")
        continue
    if section is None:
        problems.append(f"{where}: {m.group(1)} before any [section]")
        continue
    key, value = m.group(1), m.group(2).strip()
    if (section, key) in seen:
        problems.append(f"{where}: {key} given again in [{section}] (first on line {seen[section, key]})")
    seen[section, key] = n
    known = OPTIONS.get(section)
    if known is None:
        continue
    if key not in known:
        problems.append(f"{where}: dnf-automatic has no option {key} in [{section}] (it would ignore it): "
                        f"{', '.join(sorted(known))}")
        continue
    kind = known[key]
    if kind == INT:
        if not re.fullmatch(r"-?[0-9]+", value):
            problems.append(f"{where}: {key} must be an integer, not {value!r}")
    elif kind == "emitters":
        unknown = [e for e in re.split(r"[\s,]+", value) if e and e not in EMITTERS]
        if unknown:
            problems.append(f"{where}: unknown emitter(s) {', '.join(unknown)} in emit_via ({', '.join(sorted(EMITTERS))})")
    elif kind is BOOL:
        if value.lower() not in BOOL:
            problems.append(f"{where}: {key} must be a boolean ({', '.join(sorted(BOOL))}), not {value!r}")
    elif isinstance(kind, set):
        if value not in kind:
            problems.append(f"{where}: {key} must be one of {', '.join(sorted(kind))}, not {value!r}")
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
PYTHON
