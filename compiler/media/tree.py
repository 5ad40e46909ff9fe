"""Files (and their directories) added to a pycdlib ISO: ISO 9660 names derived (upper case,
A-Z 0-9 _) and unique per directory; Rock Ridge, Joliet and UDF carry the real names and modes."""

from __future__ import annotations

import io
import os
import re
from typing import Callable, Iterable

from .medium import File, error


class Names:
    """ISO 9660 names for new entries: A-Z 0-9 _, within the interchange level's lengths,
    unique (case-insensitively) per directory."""

    def __init__(self, level: int):
        self.level = level
        self.taken: dict[str, set[str]] = {}

    def reserve(self, parent: str, names: Iterable[str]) -> None:
        self.taken.setdefault(parent, set()).update(n.upper().split(";")[0].rstrip(".") for n in names)

    @staticmethod
    def _clean(text: str) -> str:
        return re.sub(r"[^A-Z0-9_]", "_", text.upper())

    def _unique(self, parent: str, make: Callable[[str], str], base: str, limit: int) -> str:
        taken = self.taken.setdefault(parent, set())
        candidate, n = make(base[:limit]), 0
        while candidate.rstrip(".") in taken:
            n += 1
            suffix = f"_{n}"
            candidate = make(base[:max(limit - len(suffix), 1)] + suffix)
        taken.add(candidate.rstrip("."))
        return candidate

    def file(self, parent: str, name: str) -> str:
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem:
            stem, ext = name, ""
        ext = self._clean(ext)[:3 if self.level == 1 else 8]
        stem = self._clean(stem) or "_"
        limit = 8 if self.level == 1 else 30 - len(ext)
        return self._unique(parent, lambda s: f"{s}.{ext}", stem, limit) + ";1"

    def directory(self, parent: str, name: str) -> str:
        return self._unique(parent, lambda s: s, self._clean(name) or "_", 8 if self.level == 1 else 31)


class Tree:
    """Adds files (and their directories) to a pycdlib ISO with Rock Ridge, Joliet, UDF names."""

    def __init__(self, iso, names: Names):
        self.iso = iso
        self.names = names
        self.rr = iso.has_rock_ridge()
        self.joliet = iso.has_joliet()
        self.udf = iso.has_udf()
        self.dirs: dict[str, str] = {"": ""}  # real path -> ISO 9660 path
        self.keep: list = []  # the file objects pycdlib reads when it writes the ISO

    def _names(self, real: str, iso_path: str) -> dict:
        kw: dict = {"iso_path": iso_path}
        leaf = real.rsplit("/", 1)[-1]
        if self.rr:
            kw["rr_name"] = leaf
        if self.joliet:
            if any(len(part) > 64 for part in real.split("/")):
                raise error("iso-name-too-long", f"{real}: a name on the ISO is longer than Joliet's 64 characters",
                             hint="use shorter VM and file names")
            kw["joliet_path"] = "/" + real
        if self.udf:
            kw["udf_path"] = "/" + real
        return kw

    def directory(self, real: str) -> str:
        if real in self.dirs:
            return self.dirs[real]
        parent, _, leaf = real.rpartition("/")
        parent_iso = self.directory(parent)
        iso_path = f"{parent_iso}/{self.names.directory(parent_iso, leaf)}"
        self.iso.add_directory(file_mode=0o040555 if self.rr else None, **self._names(real, iso_path))
        self.dirs[real] = iso_path
        return iso_path

    def add(self, f: File) -> None:
        parent, _, leaf = f.path.rpartition("/")
        parent_iso = self.directory(parent)
        iso_path = f"{parent_iso}/{self.names.file(parent_iso, leaf)}"
        fp = open(f.source, "rb") if f.source is not None else io.BytesIO(f.content)  # noqa: SIM115 - closed by close()
        self.keep.append(fp)
        self.iso.add_fp(fp, os.fstat(fp.fileno()).st_size if f.source is not None else len(f.content),
                        file_mode=(0o100000 | f.mode) if self.rr else None, **self._names(f.path, iso_path))

    def close(self) -> None:
        for fp in self.keep:
            fp.close()

