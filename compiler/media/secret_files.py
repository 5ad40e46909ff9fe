"""The secrets a medium carries: moat/secrets/<name>, the value <secrets>/<name> (its bytes as
they are). A name may have subdirectories, as the OpenVPN PKI of `moat secrets` has
(openvpn/clients/home1.key): only the files named are copied, never the rest of the directory
(the CA key, other clients' keys). A medium whose consumer needs a secret that is not there is an
error (iso-secret-missing); so is a secrets directory or file that is not private
(compiler/private.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .. import private
from .layout import MEDIUM_SECRETS
from .medium import File, error

SECRET_MODE = 0o400  # on the medium; a medium holding one is written 0600


def secret_files(names: Iterable[str], secrets: Path | None, consumer: str) -> list[File]:
    names = sorted(set(names))
    if secrets is not None:
        private.check(secrets, names)  # the same refusal as moat secrets: owner, modes, links
    files = []
    for name in names:
        source = secrets / name if secrets else None
        if source is None or not source.is_file():
            where = f"{secrets}/{name} does not exist" if secrets else "no secrets directory was given (--secrets DIR)"
            hint = ("make it with `moat secrets init BLUEPRINT --dir DIR` (or put the value of "
                    f"secret:{name} in DIR/{name}, first line) and pass --secrets DIR; secrets never enter the bundle")
            if "/" in name:  # a file of the OpenVPN PKI
                hint = "make it with `moat secrets init BLUEPRINT --dir DIR` and pass --secrets DIR"
            raise error("iso-secret-missing", f"{consumer} reads {MEDIUM_SECRETS}/{name} from its medium, "
                         f"but {where}", hint=hint)
        value = source.read_bytes()
        if not value.strip():
            raise error("iso-secret-missing", f"{source} is empty", hint=f"write the value of secret:{name} into it")
        files.append(File(f"{MEDIUM_SECRETS}/{name}", value, 0o400))
    return files

