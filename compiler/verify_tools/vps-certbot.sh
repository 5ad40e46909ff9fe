#!/bin/sh
# moat validator: certbot itself reads a generated cli.ini (/etc/letsencrypt/cli.ini on the VPS), offline.
# usage: vps-certbot.sh FILE
# certbot runs with FILE as --config and throwaway config, work and logs directories (under
# /tmp, removed on exit), as `certbot certonly --dry-run` for a name under .invalid with an
# ACME server URL of scheme file://:
#   1. its argument parser takes every key of FILE as the option of that name: an unknown key
#      ("unrecognized arguments") or a value the option does not take (key type, curve, a port
#      that is no integer, challenge type, boolean) is rejected;
#   2. plugin selection must find the authenticator, and account registration must have an
#      email or register-unsafely-without-email;
#   3. then its first network step, fetching the ACME directory, fails at once: requests has no
#      adapter for file:// URLs, so nothing leaves the machine. Getting there is the success;
#      any other outcome is a rejection.
# Not checked by certbot before it talks to a CA: the email's syntax, port ranges, addresses.
# certbot also reads this machine's /etc/letsencrypt/cli.ini (first: FILE overrides it); the
# user's ~/.config/letsencrypt/cli.ini is kept out (XDG_CONFIG_HOME is temporary), and so is
# everything certbot writes (TMPDIR too: its early log goes there before --logs-dir applies).
# On rejection: certbot's messages, then "FILE:N: ..." for each line setting an option they name.
set -eu
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need certbot certbot
need coreutils mktemp rm
need grep grep
need mawk awk
needs_checked
[ $# -eq 1 ] || { echo "usage: $0 cli.ini" >&2; exit 2; }
file=$(absolute "$1")
[ -r "$file" ] || { echo "$file: cannot read" >&2; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-certbot.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
server="file://moat-verify.invalid/directory"
status=0
out=$(XDG_CONFIG_HOME="$tmp/xdg" TMPDIR="$tmp" certbot --config "$file" --config-dir "$tmp/config" --work-dir "$tmp/work" \
    --logs-dir "$tmp/logs" certonly --dry-run --server "$server" -d moat-verify.invalid 2>&1) || status=$?
if [ "$status" -ne 0 ] && printf '%s\n' "$out" | grep -qF "No connection adapters were found for '$server'"; then
    exit 0
fi
starts certbot certbot --version  # certbot is Python, with many modules
if printf '%s\n' "$out" | grep -q '^certbot: error:'; then
    printf '%s\n' "$out" | grep '^certbot: error:' >&2  # without the usage text before it
else
    printf '%s\n' "$out" | grep -v -e '^Saving debug log' -e '^Ask for help or search' >&2 || true
fi
[ "$status" -ne 0 ] || echo "$file: certbot did not stop where it needs the network (exit 0): not checked" >&2
# the line of FILE behind the message: the key certbot names ("argument --key:", "--key=value",
# "for key:"), or for a plugin that is not installed, the line whose value names it
printf '%s\n' "$out" | awk -v file="$file" '
    NR == FNR { msg = msg "\n" $0; next }
    /^[[:space:]]*[#;]/ || !/=/ { next }
    {
        key = $0; sub(/[[:space:]]*=.*/, "", key); sub(/^[[:space:]]+/, "", key)
        value = $0; sub(/^[^=]*=[[:space:]]*/, "", value); sub(/[[:space:]]+$/, "", value)
        if (index(msg, "argument --" key ":") || index(msg, " --" key "=") || index(msg, "for " key ":") ||
            (value != "" && index(msg, "requested " value " plugin")))
            printf "%s:%d: certbot rejects this setting: %s\n", file, FNR, $0
    }' - "$file" >&2
exit 1
