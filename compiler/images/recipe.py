"""What a golden image is made of, and the key that names it (Nix-style).

The key is the hash of everything that decides the image's contents: distribution, release,
architecture, the elements (moat's own, file by file, and the element dependencies among them),
the extra packages, the mirror snapshot if one is declared, and diskimage-builder's version (its
own elements are covered by it). The mirror's address is not part of the key: the same release
from another mirror is the same image. The key needs no diskimage-builder installed: a bundle
records its VMs' image keys on any machine; only baking needs it.

Those inputs do not say which package versions the mirror gave. An image locked by the
blueprint's lock file (compiler/images/lock.py, written by `moat images --refresh`) is named by
them too: its key is the hash of the recipe's key and of its installed packages (`locked_key`),
so a rebake that installs any other version is a new key, and one that installs the same is not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import attrs

from ..cached_build import user_cache
from ..identity import elements_dir

# diskimage-builder is pinned to this release (pyproject.toml): its elements are part of every image
DIB_VERSION = "3.43.0"
FORMAT = 1  # bumped when the bake changes in a way the inputs below do not show
ARCH = "amd64"
BASE_ELEMENT = "moat-base"  # every image: no baked-in identity, NoCloud, /etc/moat/image.json
# the element that gives each distribution its root file system (DIB's own)
DISTRIBUTION_ELEMENT = {"debian": "debian-minimal", "ubuntu": "ubuntu-minimal"}
IMAGE_INFO = "/etc/moat/image.json"  # inside every image
IMAGE_PACKAGES = "/etc/moat/image-packages.txt"  # inside every image: NAME=VERSION per line, sorted
LOCK_FORMAT = "moat-image-lock-v1"  # in the locked key's hash (moat-base's cleanup.d computes it too)


def packages_digest(packages) -> str:
    """sha256 of the package list as IMAGE_PACKAGES holds it: `NAME=VERSION\n` lines, sorted
    bytewise (sha256sum of that file, as the bake's cleanup.d computes it)."""
    return hashlib.sha256("".join(p + "\n" for p in sorted(packages)).encode()).hexdigest()


def locked_key(recipe_key: str, digest: str) -> str:
    """The key of the image baked from the recipe with key `recipe_key` that holds exactly the
    packages whose digest is `digest` (moat-base's cleanup.d writes the same into the image)."""
    return hashlib.sha256(f"{LOCK_FORMAT} {recipe_key} {digest}\n".encode()).hexdigest()[:32]


def moat_elements(root: Path | None = None) -> dict[str, Path]:
    """moat's own elements by name."""
    root = root or elements_dir()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and (p / "README.rst").exists()}


def element_closure(names: tuple[str, ...], root: Path | None = None) -> list[str]:
    """The moat elements named and those they depend on (element-deps), in a stable order."""
    known = moat_elements(root)
    seen: list[str] = []
    todo = list(names)
    while todo:
        name = todo.pop(0)
        if name in seen or name not in known:
            continue
        seen.append(name)
        deps = known[name] / "element-deps"
        if deps.exists():
            todo += [line.split("#")[0].strip() for line in deps.read_text().splitlines() if line.split("#")[0].strip()]
    return seen


def _tree_hash(h, path: Path) -> None:
    for f in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        rel = f.relative_to(path).as_posix()
        h.update(rel.encode() + b"\0" + oct(f.stat().st_mode & 0o111).encode() + b"\0")
        h.update(f.read_bytes() + b"\0")


@attrs.frozen
class ImageRecipe:
    name: str
    distribution: str
    release: str
    elements: tuple[str, ...]     # as declared; moat-base and the distribution's element are added
    packages: tuple[str, ...] = ()
    snapshot: str | None = None   # snapshot.debian.org-style timestamp, if the blueprint pins one
    locked: str | None = None     # packages_digest of the lock's package list, if the image is locked

    @property
    def all_elements(self) -> tuple[str, ...]:
        """The element list given to disk-image-create."""
        first = [DISTRIBUTION_ELEMENT[self.distribution], BASE_ELEMENT]
        return tuple(first + [e for e in self.elements if e not in first])

    def _recipe_inputs(self) -> dict:
        return {"format": FORMAT, "dib": DIB_VERSION, "arch": ARCH, "distribution": self.distribution,
                "release": self.release, "elements": list(self.all_elements),
                "packages": sorted(set(self.packages)), "snapshot": self.snapshot}

    def inputs(self) -> dict:
        """What host/images.json records: the recipe's inputs, and `locked` when the image is."""
        return {**self._recipe_inputs(), **({"locked": self.locked} if self.locked else {})}

    def recipe_key(self, root: Path | None = None) -> str:
        """The hash of the recipe's inputs and element files, whatever the lock says."""
        root = root or elements_dir()
        h = hashlib.sha256(json.dumps(self._recipe_inputs(), sort_keys=True).encode())
        for name in element_closure(self.all_elements, root):
            h.update(b"element\0" + name.encode() + b"\0")
            _tree_hash(h, moat_elements(root)[name])
        return h.hexdigest()[:32]

    def key(self, root: Path | None = None) -> str:
        """The image's key: the recipe's, or, locked, the hash of it and of the locked packages."""
        base = self.recipe_key(root)
        return locked_key(base, self.locked) if self.locked else base

    def lock_to(self, packages) -> ImageRecipe:
        """This recipe locked to exactly these installed packages (NAME=VERSION)."""
        return attrs.evolve(self, locked=packages_digest(packages))

    def file_name(self, root: Path | None = None) -> str:
        """The golden image's file name, on the media and on the host: NAME-KEY.qcow2."""
        return f"{self.name}-{self.key(root)}.qcow2"

    @classmethod
    def from_inputs(cls, name: str, inputs: dict) -> ImageRecipe:
        """The recipe back from what a bundle records (host/images.json: name, key, inputs)."""
        first = {DISTRIBUTION_ELEMENT[inputs["distribution"]], BASE_ELEMENT}
        return cls(name, inputs["distribution"], inputs["release"],
                   tuple(e for e in inputs["elements"] if e not in first), tuple(inputs.get("packages", ())),
                   inputs.get("snapshot"), inputs.get("locked"))

    def info(self, root: Path | None = None) -> dict:
        """What /etc/moat/image.json holds (IMAGE_PACKAGES beside it lists the package versions);
        locked, also the recipe's own key."""
        return {"name": self.name, "key": self.key(root), **self.inputs(),
                **({"recipe": self.recipe_key(root)} if self.locked else {})}


def cache_root() -> Path:
    """Where baked images live: $MOAT_IMAGES_DIR, else $XDG_CACHE_HOME/moat/images, else
    ~/.cache/moat/images (apart from the validation cache, like the tools tree)."""
    return user_cache("MOAT_IMAGES_DIR", "images")


def baked(recipe: ImageRecipe, root: Path | None = None) -> Path | None:
    """The baked image file of this recipe in the cache, or None."""
    path = baked_path(recipe.name, recipe.key(root))
    return path if path.is_file() else None


def baked_path(name: str, key: str) -> Path:
    """Where the image NAME with KEY lives in the cache once baked (it may not exist)."""
    return cache_root() / f"{name}-{key}" / f"{name}.qcow2"
