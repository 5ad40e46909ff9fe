"""What the host lacks, sent as one tar through SSH (the host's `switch receive` unpacks it):
- the store path, content-addressed by file: the manifest always, a file only when no store path
  on the host holds its sha256 (a deploy that changes one forward sends that file, not the bundle);
- the golden images the bundle names that the host does not have (NAME-KEY.qcow2: a new key is a
  new file, an unchanged image is never sent again);
- the VMs' seeds (they carry secrets, so they are never in the store: /var/lib/moat/seeds/SHA256.iso
  on the host, 0600), only those the host does not hold.
`sums.json` comes first: the sha256 of every image and seed, checked by the host before they land."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import IO, Iterable

import attrs

from ..store import MANIFEST


@attrs.frozen
class Item:
    name: str                    # path inside the tar
    size: int
    data: bytes | None = None    # small files, in memory
    path: Path | None = None     # images, read as they are sent


@attrs.frozen
class Payload:
    items: tuple[Item, ...]
    sums: dict[str, str]

    @property
    def bytes(self) -> int:
        return sum(i.size for i in self.items)

    def describe(self) -> str:
        store = [i for i in self.items if i.name.startswith("store/") and not i.name.endswith("/" + MANIFEST)]
        images = [i for i in self.items if i.name.startswith("images/")]
        seeds = [i for i in self.items if i.name.startswith("seeds/")]
        return (f"{len(store)} store file(s), {len(images)} image(s), {len(seeds)} seed(s): "
                f"{human(self.bytes)}")


def human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def payload(bundle_root: Path, have: dict, images: Iterable[tuple[str, Path, str]],
            seeds: Iterable[tuple[str, bytes, str]]) -> Payload:
    """`have`: the host's `switch have`; images: (file, local path, sha256); seeds: (vm, bytes, sha256)."""
    name = bundle_root.name
    manifest = json.loads((bundle_root / MANIFEST).read_bytes())
    hashes = set(have.get("hashes", ()))
    items: list[Item] = []
    sums: dict[str, str] = {}
    if name not in have.get("stores", ()):
        items.append(Item(f"store/{name}/{MANIFEST}", (bundle_root / MANIFEST).stat().st_size,
                          (bundle_root / MANIFEST).read_bytes()))
        sent: set[str] = set()
        for rel, entry in sorted(manifest["files"].items()):
            if entry["sha256"] in hashes or entry["sha256"] in sent:
                continue
            sent.add(entry["sha256"])
            data = (bundle_root / rel).read_bytes()
            items.append(Item(f"store/{name}/{rel}", len(data), data))
    for file, path, sha in images:
        if file not in have.get("images", ()):
            items.append(Item(f"images/{file}", path.stat().st_size, path=path))
            sums[f"images/{file}"] = sha
    for _vm, data, sha in seeds:
        if sha not in have.get("seeds", ()):
            items.append(Item(f"seeds/{sha}.iso", len(data), data))
            sums[f"seeds/{sha}.iso"] = sha
    return Payload(tuple(items), sums)


def write_tar(p: Payload, out: IO[bytes], progress=lambda done, total: None) -> None:
    """The payload as an uncompressed tar stream (images are qcow2, already compact)."""
    total = p.bytes
    done = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        sums = json.dumps(p.sums, sort_keys=True).encode()
        tar.addfile(_info("sums.json", len(sums)), io.BytesIO(sums))
        for item in p.items:
            if item.data is not None:
                tar.addfile(_info(item.name, item.size), io.BytesIO(item.data))
            else:
                with open(item.path, "rb") as f:
                    tar.addfile(_info(item.name, item.size), f)
            done += item.size
            progress(done, total)


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    return info
