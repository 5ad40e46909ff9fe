"""Whether a secrets directory is private: the one check `moat secrets`, `moat iso` and `moat
vps-archive` make before they read (or write) a secret, with the same errors everywhere.

Private means: the directory, every directory between it and a secret, and every secret file
is owned by the user running moat (secrets-owner) and lets neither group nor others in
(secrets-mode: 0700 for a directory, 0600 for a file); none is a symbolic link (secrets-mode).
A directory another user owns can be emptied, filled or swapped by that user, and a mode with
group/other bits hands the keys to every account of the machine: moat refuses both instead of
copying such a secret onto a medium or into an archive.

A leaf module (it imports only the diagnostics), so each of those commands can import it."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable

from .diagnostics import Diagnostic, MoatError

MODE_RULE = "secrets-mode"
OWNER_RULE = "secrets-owner"


def _user(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def problems(path: Path) -> list[Diagnostic]:
    """What makes `path` not private (nothing when it is missing)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return []
    if stat.S_ISLNK(st.st_mode):
        return [Diagnostic(MODE_RULE, f"{path}: is a symbolic link",
                           hint=f"put the file itself in its place (cp --remove-destination \"$(readlink -f {path})\" "
                                f"{path})")]
    out = []
    me = os.geteuid()
    if st.st_uid != me:
        out.append(Diagnostic(OWNER_RULE, f"{path}: owned by {_user(st.st_uid)} (uid {st.st_uid}), not by "
                              f"{_user(me)} who runs moat: that user can read or replace the secrets",
                              hint=f"chown {_user(me)} {path}"))
    bits = stat.S_IMODE(st.st_mode)
    if bits & 0o077:
        want = "700" if stat.S_ISDIR(st.st_mode) else "600"
        out.append(Diagnostic(MODE_RULE, f"{path}: mode {bits:04o} lets group/others in (want {want})",
                              hint=f"chmod {want} {path}"))
    return out


def why(path: Path) -> str | None:
    """The first problem of `path`, in words (for a listing), else None."""
    found = problems(path)
    return found[0].message[len(f"{path}: "):] if found else None


def errors(directory: Path, names: Iterable[str]) -> list[Diagnostic]:
    """The problems of `directory`, of each of `names` (paths relative to it) and of every
    directory between them."""
    paths: dict[Path, None] = {directory: None}
    for name in names:
        parts = Path(name).parts
        for i in range(1, len(parts) + 1):
            paths[directory.joinpath(*parts[:i])] = None
    return [d for p in paths for d in problems(p)]


def check(directory: Path, names: Iterable[str] = ()) -> None:
    """Raise every problem of `errors` at once."""
    found = errors(directory, names)
    if found:
        raise MoatError(found)
