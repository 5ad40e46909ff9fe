#!/bin/sh
# moat validator: the host's switch (host/moat/switch), as the host's Python reads it.
# usage: switch.sh FILE
# Rocky/Alma 9 run the switch with their python3, 3.9: the program must parse as Python 3.9 (ast
# with feature_version, which rejects later syntax such as match or parenthesized context
# managers), compile, and answer --help.
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need python3.11-minimal /usr/bin/python3
needs_checked
[ $# -eq 1 ] || { echo "usage: $0 FILE" >&2; exit 2; }
file=$(absolute "$1")
/usr/bin/python3 - "$file" <<'PY' || { starts python3.11-minimal /usr/bin/python3 --version; exit 1; }
import ast, sys
path = sys.argv[1]
source = open(path, encoding="utf-8").read()
try:
    ast.parse(source, path, feature_version=(3, 9))
    compile(source, path, "exec")
except SyntaxError as exc:
    print(f"{path}:{exc.lineno}:{exc.offset}: not Python 3.9: {exc.msg}", file=sys.stderr)
    sys.exit(1)
PY
/usr/bin/python3 "$file" --help >/dev/null || { echo "$file: --help fails" >&2; exit 1; }
