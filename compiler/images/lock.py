"""The image lock: which package versions each golden image of a blueprint holds.

`NAME.images.lock` beside `NAME.yaml` (load.lock_path), written by `moat images --refresh` and
meant to be committed: a review of it shows every package version an update brings.

    {"images": {"nextcloud": {"packages": ["adduser=3.134", ...], "recipe": "KEY"}}, "version": 1}

`recipe` is the key of the recipe the packages were baked from (ImageRecipe.recipe_key): an entry
made for another recipe (the blueprint's image changed since) is stale, and the image is then
keyed by its recipe alone (a warning, image-lock-stale) until the next refresh. A current entry
locks the image: its key becomes the hash of the recipe's key and of the packages
(recipe.locked_key), so a refresh that brings any other version is a new key (and a new bundle:
the VMs installed from that image are reinstalled), one that brings the same keeps it.

The load stage reads the file (load.Source.lock); `read` here judges what it says.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path as FsPath

import attrs

from ..diagnostics import Diagnostic, MoatError, Path, quote
from ..load import Source
from .recipe import packages_digest

VERSION = 1
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]*=[A-Za-z0-9.+~:-]+$")  # NAME=VERSION (Debian's characters)
_KEY = re.compile(r"^[0-9a-f]{32}$")
_HINT = ("moat images --refresh writes this file: take it from git, or remove it and run "
         "sudo moat images --refresh BLUEPRINT")


@attrs.frozen
class LockedImage:
    """One image's entry: the recipe key it was baked from and its installed packages."""

    name: str
    recipe: str
    packages: tuple[str, ...]
    at: Path = ()

    @property
    def digest(self) -> str:
        return packages_digest(self.packages)


@attrs.frozen
class ImagesLock:
    name: str  # the file, for messages
    images: dict[str, LockedImage] = attrs.field(eq=False)


def read(source: Source | None) -> ImagesLock | None:
    """What a loaded lock says (None without a lock). Raises MoatError, positioned in the lock."""
    if source is None:
        return None
    data, problems = source.data, []

    def bad(message: str, path: Path = ()) -> None:
        problems.append(Diagnostic("image-lock-invalid", message, path, hint=_HINT))

    if not isinstance(data, dict):
        bad("an image lock is a JSON object {\"images\": {...}, \"version\": 1}")
        raise MoatError(problems, source)
    for key in sorted(set(data) - {"images", "version"}):
        bad(f"unknown key {quote(key)} (an image lock has `images` and `version`)", (key,))
    if data.get("version") != VERSION:
        bad(f"version {quote(data.get('version'))}: this moat reads image locks of version {VERSION}",
            ("version",) if "version" in data else ())
    images = data.get("images", {})
    entries: dict[str, LockedImage] = {}
    if not isinstance(images, dict):
        bad("`images` is an object: image name -> {recipe, packages}", ("images",))
        images = {}
    for name, entry in sorted(images.items()):
        at = ("images", name)
        if not isinstance(entry, dict) or set(entry) != {"recipe", "packages"}:
            bad(f"image {quote(name)}: an entry is {{\"packages\": [...], \"recipe\": KEY}}", at)
            continue
        if not isinstance(entry["recipe"], str) or not _KEY.match(entry["recipe"]):
            bad(f"image {quote(name)}: recipe is a key of 32 hexadecimal digits", at + ("recipe",))
            continue
        packages = entry["packages"]
        if not isinstance(packages, list) or not packages:
            bad(f"image {quote(name)}: packages is a list of NAME=VERSION", at + ("packages",))
            continue
        seen: dict[str, int] = {}
        for i, item in enumerate(packages):
            if not isinstance(item, str) or not _PACKAGE.match(item):
                bad(f"image {quote(name)}: {quote(item)} is not NAME=VERSION", at + ("packages", i))
            elif item.split("=", 1)[0] in seen:
                bad(f"image {quote(name)}: package {quote(item.split('=', 1)[0])} is listed twice", at + ("packages", i))
            else:
                seen[item.split("=", 1)[0]] = i
        entries[name] = LockedImage(name, entry["recipe"], tuple(sorted(packages)), at)
    if problems:
        raise MoatError(problems, source)
    return ImagesLock(source.name, entries)


def text(images: dict[str, LockedImage]) -> str:
    """The lock file's text: sorted, one package per line (a review shows each version change)."""
    data = {"images": {n: {"packages": sorted(e.packages), "recipe": e.recipe} for n, e in sorted(images.items())},
            "version": VERSION}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write(path: FsPath, content: str) -> None:
    """Replace the lock atomically: a reader sees the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_packages(content: str) -> tuple[str, ...]:
    """A baked image's package list (image-packages.txt: NAME=VERSION per line), sorted."""
    return tuple(sorted(line.strip() for line in content.splitlines() if line.strip()))


def changes(old: tuple[str, ...], new: tuple[str, ...]) -> list[str]:
    """What differs between two package lists, by package: `NAME OLD -> NEW`, `+NAME=V`, `-NAME=V`."""
    before = dict(p.split("=", 1) for p in old)
    after = dict(p.split("=", 1) for p in new)
    out = []
    for name in sorted(set(before) | set(after)):
        if name not in before:
            out.append(f"+{name}={after[name]}")
        elif name not in after:
            out.append(f"-{name}={before[name]}")
        elif before[name] != after[name]:
            out.append(f"{name} {before[name]} -> {after[name]}")
    return out
