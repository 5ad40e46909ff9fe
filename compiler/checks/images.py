"""Rules for the golden images (blueprint `images`): image-release (a release of another
distribution) and unknown-reference for an image element that is not one of moat's (images/).
Undeclared images in `install.image` are unknown-reference (checks/references.py), repeated
image names duplicate-name (checks/names.py), an image no VM uses is unused (checks/unused.py).
"""

from __future__ import annotations

from typing import Iterator

from ..diagnostics import Diagnostic
from ..images.recipe import BASE_ELEMENT, moat_elements
from . import Context

# the releases each distribution is baked from (the schema's `release` enum is their union)
RELEASES = {"debian": ("bookworm", "trixie"), "ubuntu": ("jammy", "noble")}


def check(ctx: Context) -> Iterator[Diagnostic]:
    known = moat_elements()
    for image in ctx.bp.images:
        releases = RELEASES[image.distribution]
        if image.release not in releases:
            other = next(d for d, rs in RELEASES.items() if image.release in rs)
            yield Diagnostic("image-release", f"'{image.release}' is a release of {other}, not of {image.distribution}",
                             image.at + ("release",),
                             hint=f"{image.distribution} releases: {', '.join(releases)} (or distribution: {other})")
        for i, element in enumerate(image.elements):
            if element not in known:
                listed = ", ".join(sorted(known)) or "none"
                yield Diagnostic("unknown-reference", f"unknown image element '{element}': not one of moat's elements",
                                 image.at + ("elements", i),
                                 hint=f"moat's elements (directories under images/ with a README.rst): {listed}; "
                                      f"{BASE_ELEMENT} is in every image anyway")
