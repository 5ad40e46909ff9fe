#!/bin/sh
# moat validator: a generated /etc/dnf/automatic.conf, read the way dnf-automatic reads it.
# usage: updates-dnf-automatic.sh FILE
# dnf is not on Debian, so this is a model of dnf-automatic 4.15+ (RHEL 9.3+; dnf/automatic/main.py
# and libdnf's INI parser), in awk:
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
need mawk awk
needs_checked
[ $# -eq 1 ] || { echo "usage: $0 automatic.conf" >&2; exit 2; }
file=$(absolute "$1")
[ -r "$file" ] || { echo "$file: cannot read" >&2; exit 1; }
# option=type per section; types: bool, int, str, emitters, or the values of an enumeration (a|b|c)
exec awk -v file="$file" '
BEGIN {
    spec["commands"] = "apply_updates=bool download_updates=bool base_config_file=str upgrade_type=default|security " \
        "random_sleep=int network_online_timeout=int reboot=never|when-changed|when-needed reboot_command=str"
    spec["emitters"] = "emit_via=emitters output_width=int system_name=str"
    spec["email"] = "email_to=str email_from=str email_host=str email_port=int"
    spec["command"] = "command_format=str stdin_format=str"
    spec["command_email"] = "command_format=str stdin_format=str email_to=str email_from=str"
    spec["base"] = "*"  # dnf.conf options: not checked here
    for (s in spec) {
        sections = sections (sections == "" ? "" : ", ") s
        n = split(spec[s], kv, " ")
        for (i = 1; i <= n; i++) { split(kv[i], pair, "="); type[s, pair[1]] = pair[2]; names[s] = names[s] " " pair[1] }
    }
    split("1 0 yes no true false on off", b, " "); for (i in b) bool[b[i]] = 1
    split("email stdio motd command command_email", e, " "); for (i in e) emitter[e[i]] = 1
    section = ""; bad = 0
}
function problem(msg) { print file ":" FNR ": " msg; bad = 1 }
{
    line = $0; sub(/^[ \t]+/, "", line); sub(/[ \t\r]+$/, "", line)
    if (line == "" || line ~ /^[#;]/) next
    if (line ~ /^\[[^]]+\]$/) {
        section = substr(line, 2, length(line) - 2); gsub(/^[ \t]+|[ \t]+$/, "", section)
        if (!(section in spec)) problem("unknown section [" section "] (dnf-automatic reads " sections ")")
        next
    }
    if (line !~ /^[A-Za-z0-9_.-]+[ \t]*=/) { problem("neither [section] nor key = value: " line); next }
    key = line; sub(/[ \t]*=.*/, "", key)
    value = line; sub(/^[^=]*=[ \t]*/, "", value)
    if (section == "") { problem(key " before any [section]"); next }
    if ((section, key) in seen) problem(key " given again in [" section "] (first on line " seen[section, key] ")")
    seen[section, key] = FNR
    if (!(section in spec) || spec[section] == "*") next
    if (!((section, key) in type)) { problem("dnf-automatic has no option " key " in [" section "] (it would ignore it):" names[section]); next }
    t = type[section, key]
    if (t == "int") { if (value !~ /^-?[0-9]+$/) problem(key " must be an integer, not \"" value "\"") }
    else if (t == "bool") { if (!(tolower(value) in bool)) problem(key " must be a boolean (1 0 yes no true false on off), not \"" value "\"") }
    else if (t == "emitters") {
        n = split(value, list, /[ \t,]+/)
        for (i = 1; i <= n; i++) if (list[i] != "" && !(list[i] in emitter)) problem("unknown emitter " list[i] " in emit_via (email stdio motd command command_email)")
    }
    else if (t != "str") {
        n = split(t, allowed, "|"); ok = 0
        for (i = 1; i <= n; i++) if (value == allowed[i]) ok = 1
        if (!ok) { gsub(/\|/, ", ", t); problem(key " must be one of " t ", not \"" value "\"") }
    }
}
END { exit bad }
' "$file"
