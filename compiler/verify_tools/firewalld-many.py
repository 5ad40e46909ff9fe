"""moat validator helper: `firewall-offline-cmd --check-config` on many system-config directories
in one Python process.

usage: python3 firewalld-many.py DEFAULT_CONFIG DIR...
Run by firewall-firewalld.sh (a batch) with the interpreter firewall-offline-cmd names. Each
directory gets what `firewall-offline-cmd --system-config DIR --default-config DEFAULT_CONFIG
--check-config` does: an offline Firewall started on it, then check_on_disk_config. As the
wrapper, any ERROR or WARNING line firewalld prints is a rejection too (an invalid rich rule is
dropped with a WARNING). Each directory starts a Firewall of its own: nothing read from one is
seen by the next. Starting firewalld's Python costs about a fifth of a second; once per batch
instead of once per file. Prints what firewalld said of each rejected directory; exits 1 when
any is rejected (the build then asks the single-file wrapper for each file's own message).
"""

import os
import re
import sys
import tempfile

WARNED = re.compile(r"(^|[^A-Za-z])(ERROR|WARNING)[: ]", re.M)


def check(directory: str, default: str) -> str:
    """What firewalld says of one system-config directory: "" when it accepts it."""
    from firewall import config
    from firewall.core.fw import Firewall
    from firewall.core.io.functions import check_on_disk_config

    config.set_system_config_paths(directory)
    config.set_default_config_paths(default)
    with tempfile.TemporaryFile("w+") as said:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(said.fileno(), 1)
        os.dup2(said.fileno(), 2)
        try:
            fw = Firewall(offline=True)
            fw.start()
            check_on_disk_config(fw)
            failure = ""
        except Exception as err:  # noqa: BLE001 - what firewall-offline-cmd reports as a configuration error
            failure = f"Configuration error: {err}"
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        said.seek(0)
        text = said.read()
    if failure or WARNED.search(text):
        return (text + failure).strip() or "rejected"
    return ""


def main(argv):
    default, directories = argv[0], argv[1:]
    rejected = 0
    for directory in directories:
        said = check(directory, default)
        if said:
            rejected += 1
            print(f"{directory}: {said}", file=sys.stderr)
    return 1 if rejected else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
