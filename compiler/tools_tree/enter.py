"""Running a validator inside the tools tree.

A validator's command names host paths: the bundle file, the validator scripts of this moat
installation, programs of moat's own Python environment (ksvalidator). Inside the tree the
bundle is mounted at BUNDLE_MOUNT, the scripts at TOOLS_MOUNT, and any other host program is
looked up by its name on the tree's PATH, where the recipe put it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from .recipe import BUNDLE_MOUNT, ENTER_SCRIPT, TOOLS_MOUNT


def translate(arg: str, tools: Path) -> str:
    """One argument of a validator's command, as the tree sees it."""
    prefix = str(tools) + "/"
    if arg.startswith(prefix):
        return TOOLS_MOUNT + "/" + arg[len(prefix):]
    if arg.startswith("/") and os.path.isfile(arg) and os.access(arg, os.X_OK):
        return os.path.basename(arg)
    return arg


def command(tree: Path, bundle: Path, tools: Path, argv: list[str]) -> list[str]:
    """The command that runs `argv` (naming bundle files under BUNDLE_MOUNT) inside `tree`."""
    inside = [translate(part, tools) for part in argv]
    userns = [] if os.geteuid() == 0 else ["--map-root-user"]
    return ["unshare", "--mount", "--pid", "--fork", "--kill-child", *userns,
            "sh", str(ENTER_SCRIPT), str(tree), str(bundle.resolve()), str(tools), "--", *inside]


def outside(text: str, bundle: Path) -> str:
    """A tool's message with the tree's paths named as the caller knows them."""
    return text.replace(BUNDLE_MOUNT + "/", str(bundle) + "/")


# Inside the tree, the other end of a Session: runs each command it is sent (one JSON line: argv
# and timeout) in a process group of its own with nothing on stdin, kills what is left in that
# group, and answers one JSON line (status, stdout, stderr). It is the namespace's first process:
# when it ends, by the end of its input or killed, the kernel kills everything left in the tree.
SERVE = r"""
import json, os, signal, subprocess, sys
for line in sys.stdin:
    ask = json.loads(line)
    try:
        proc = subprocess.Popen(ask["argv"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as error:  # as a shell says a program is not there
        proc, out, err, status = None, b"", str(error).encode(), 127
    try:
        if proc is not None:
            out, err = proc.communicate(timeout=ask["timeout"])
            status = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        status, err = -signal.SIGKILL, err + b"\nmoat: killed after %d s" % ask["timeout"]
    if proc is not None:  # what it left running in its group goes with it, as with an entry of its own
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    sys.stdout.write(json.dumps({"status": status, "stdout": out.decode(errors="replace"),
                                 "stderr": err.decode(errors="replace")}) + "\n")
    sys.stdout.flush()
"""


class Session:
    """One entry into the tree that runs many commands, one after the other: each command costs
    what it does, not also the namespaces and the dozen mounts of an entry (~40 ms). The bundle
    and the scripts are mounted as for command(); each command starts with the same clean
    environment, and /tmp is shared by the commands of one session."""

    def __init__(self, tree: Path, bundle: Path, tools: Path) -> None:
        from .. import children

        self.tools = tools
        self.proc = children.spawn(command(tree, bundle, tools, ["python3", "-I", "-S", "-c", SERVE]))

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        inside = [translate(part, self.tools) for part in argv]
        try:
            self.proc.stdin.write(json.dumps({"argv": inside, "timeout": timeout}).encode() + b"\n")
            self.proc.stdin.flush()
            said = json.loads(self.proc.stdout.readline())
        except (OSError, ValueError):  # the tree's python3 ended (moat stopping, a broken tree)
            from .. import children

            children.check_stopping()
            raise OSError(f"the tools tree session ended (status {self.proc.poll()})") from None
        return subprocess.CompletedProcess(argv, said["status"], said["stdout"], said["stderr"])

    def close(self) -> None:
        from .. import children

        try:
            self.proc.stdin.close()
        except OSError:
            pass
        children.finish(self.proc)
