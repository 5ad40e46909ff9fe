"""What the media step works with: a file to put on a medium, a medium written, the result,
progress reports and the stage's errors."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import attrs

from ..diagnostics import Diagnostic, MoatError

Progress = Callable[[str, int, int], None]  # (what, done, total) in bytes; done == total at the end


@attrs.frozen
class Medium:
    """One ISO written: what it is for, where, its volume label and sha256."""

    kind: str            # "host" (remastered DVD), "host-oemdrv", "cidata", "oemdrv"
    vm: str | None
    path: Path
    label: str
    sha256: str
    size: int
    secrets: tuple[str, ...] = ()      # names of the secrets on it (moat/secrets/<name>, <name> may hold '/')
    boot_menus: tuple[str, ...] = ()   # boot menus made unattended (remastered DVD)
    images: tuple[str, ...] = ()       # golden images on it (moat/images/<file>)


@attrs.frozen
class Result:
    media: tuple[Medium, ...]
    warnings: tuple[Diagnostic, ...]


@attrs.frozen
class File:
    """A file to put on a medium: `content` in memory, or, for a large one (a golden image), the
    file `source` on disk, which pycdlib copies in blocks when it writes the ISO."""

    path: str            # path on the ISO, without a leading slash
    content: bytes
    mode: int            # permission bits for Rock Ridge
    source: Path | None = None


def error(rule: str, message: str, hint: str | None = None) -> MoatError:
    return MoatError([Diagnostic(rule, message, hint=hint)])
