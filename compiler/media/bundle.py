"""The bundle a medium is made from: a store path, verified against its manifest first."""

from __future__ import annotations

import json
from pathlib import Path

import attrs

from ..diagnostics import MoatError
from ..store import MANIFEST
from ..store import verify as verify_store
from .medium import error

@attrs.frozen
class Bundle:
    root: Path
    manifest: dict
    manifest_bytes: bytes

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.root.name.split("-", 1)[-1])

    def files(self, prefix: str = "") -> list[str]:
        return sorted(p for p in self.manifest["files"] if p.startswith(prefix))

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def mode(self, rel: str) -> int:
        return int(self.manifest["files"][rel]["mode"], 8) & 0o555


def load_bundle(path: Path) -> Bundle:
    root = Path(path).resolve()
    if not (root / MANIFEST).is_file():
        raise error("iso-no-bundle", f"{path} is not a bundle: it has no {MANIFEST}",
                     hint="build one first: moat build BLUEPRINT --out OUT (then moat iso --out OUT)")
    problems = verify_store(root)
    if problems:
        raise error("iso-bundle-corrupt", f"{root} differs from its manifest: {problems[0]}",
                     hint="a store path is never changed after it is written; delete it and build again")
    raw = (root / MANIFEST).read_bytes()
    return Bundle(root, json.loads(raw), raw)


def blueprint(bundle: Bundle, name: str = "blueprint.yaml"):
    """The bundle's copy of its blueprint (load.Source, with positions; named `name` in
    messages), or None when it cannot be read."""
    from .. import load

    try:
        return load.load_text(bundle.read("blueprint.yaml").decode(), name)
    except (MoatError, OSError, UnicodeDecodeError):
        return None


def blueprint_base_iso(bundle: Bundle) -> str | None:
    """host.install.base_iso of the bundle's blueprint, if the blueprint has it."""
    source = blueprint(bundle)
    data = source.data if source is not None else None
    value = ((data.get("host") or {}).get("install") or {}).get("base_iso") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None

