"""The golden images on the host's install medium.

The bundle's host/images.json (layout.HOST_IMAGES) lists the images its VMs are installed from;
`moat images` bakes them into the image cache (compiler/images/recipe.py baked_path). The host
medium carries each as moat/images/NAME-KEY.qcow2, with moat/images/SHA256SUMS, which the host
kickstart's %post checks as it copies them to /var/lib/moat/images (layout.HOST_IMAGES_DIR),
where moat-libvirt-apply makes each VM's OS volume from its image.

An image that is not baked is an error (image-not-baked), all of them at once, before anything
is written; it points at the image's declaration in the bundle's copy of the blueprint when it
finds one. The images stay on disk: pycdlib copies them into the ISO in blocks.
"""

from __future__ import annotations

import json
import re

import attrs

from ..diagnostics import Diagnostic, MoatError
from ..images.recipe import baked_path
from .bundle import Bundle, blueprint
from .layout import HOST_IMAGES, IMAGES_DIR, SUMS, sums_text
from .medium import File, Progress, error
from .write import sha256

HINT = "bake them first: moat images BLUEPRINT (or make images), then run moat iso again"
_KEY = re.compile(r"[0-9a-f]{32}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@attrs.frozen
class Image:
    name: str
    key: str
    file: str            # NAME-KEY.qcow2, its name on the medium and on the host


def listed(bundle: Bundle) -> list[Image]:
    """The images host/images.json lists (none when the bundle has no such file)."""
    if HOST_IMAGES not in bundle.manifest["files"]:
        return []
    try:
        entries = json.loads(bundle.read(HOST_IMAGES))["images"]
        images = [Image(e["name"], e["key"], e["file"]) for e in entries]
    except (ValueError, KeyError, TypeError) as exc:
        raise error("iso-bundle-corrupt", f"{bundle.root / HOST_IMAGES} is not a list of images: {exc}",
                    hint="rebuild the blueprint with this moat (moat build)") from None
    for image in images:  # the file name becomes a path on the medium and on the host
        if not (_NAME.fullmatch(image.name) and _KEY.fullmatch(image.key) and image.file == f"{image.name}-{image.key}.qcow2"):
            raise error("iso-bundle-corrupt", f"{bundle.root / HOST_IMAGES} lists an image moat cannot name: "
                        f"{attrs.asdict(image)}", hint="rebuild the blueprint with this moat (moat build)")
    return images


def _declaration(bundle: Bundle, images: list[Image]):
    """(source, {name: blueprint path of its declaration}) from the bundle's copy of the blueprint,
    so errors point at `images: - name: ...`; (None, {}) when it cannot be read."""
    source = blueprint(bundle, str(bundle.root / "blueprint.yaml"))
    if source is None:
        return None, {}
    declared = source.data.get("images") if isinstance(source.data, dict) else None
    paths = {}
    for i, entry in enumerate(declared if isinstance(declared, list) else []):
        if isinstance(entry, dict) and entry.get("name") in {image.name for image in images}:
            paths[entry["name"]] = ("images", i, "name")
    return source, paths


def baked_images(bundle: Bundle) -> list[Image]:
    """The images the bundle lists, each baked; else an error for every one that is not."""
    images = listed(bundle)
    missing = [image for image in images if not baked_path(image.name, image.key).is_file()]
    if missing:
        source, paths = _declaration(bundle, missing)
        raise MoatError([Diagnostic("image-not-baked", f"image {image.name} (key {image.key}) is not baked: "
                                    f"{baked_path(image.name, image.key)} does not exist", paths.get(image.name, ()),
                                    hint=HINT) for image in missing], source if paths else None)
    return images


def image_files(images: list[Image], progress: Progress | None = None) -> list[File]:
    """moat/images/NAME-KEY.qcow2 (read from the image cache when the ISO is written) and
    moat/images/SHA256SUMS; [] without images."""
    files, sums = [], {}
    for image in images:
        path = baked_path(image.name, image.key)
        sums[image.file] = sha256(path, progress, f"checksum of {image.file}")
        files.append(File(f"{IMAGES_DIR}/{image.file}", b"", 0o444, source=path))
    return files + [File(f"{IMAGES_DIR}/{SUMS}", sums_text(sums), 0o444)] if files else []
