"""Running a validator inside the tools tree.

A validator's command names host paths: the bundle file, the validator scripts of this moat
installation, programs of moat's own Python environment (ksvalidator). Inside the tree the
bundle is mounted at BUNDLE_MOUNT, the scripts at TOOLS_MOUNT, and any other host program is
looked up by its name on the tree's PATH, where the recipe put it.
"""

from __future__ import annotations

import os
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
