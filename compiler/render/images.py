"""host/images.json: the golden images the bundle's VMs are installed from, by name.

    {"images": [{"name": ..., "key": ..., "file": "NAME-KEY.qcow2", "inputs": {...}}]}

`inputs` is the recipe's (compiler/images/recipe.py): what the key is the hash of, besides the
element files. The media step reads this file to put each image on the host's install medium
(the host's kickstart copies them to /var/lib/moat/images), and moat-libvirt-apply creates each
image VM's OS volume from its file. An image no VM uses is not listed (rule unused warns).
"""

from __future__ import annotations

import json
from typing import Iterator

from ..derive import Plan
from ..media.layout import HOST_IMAGES as PATH
from ..media.layout import HOST_IMAGES_DIR  # noqa: F401 - read by render/libvirt.py
from . import Output

HOST_STATE_DIR = "/var/lib/moat"          # on the host: volumes/POOL/VOLUME, the image an OS volume holds
VALIDATORS = ()  # plain JSON written by json.dumps; its readers are tested


def manifest(plan: Plan) -> dict:
    return {"images": [{"name": g.name, "key": g.key, "file": g.file, "inputs": g.recipe.inputs()}
                       for g in plan.images]}


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    yield Output(PATH, (json.dumps(manifest(plan), indent=2, sort_keys=True) + "\n").encode())
