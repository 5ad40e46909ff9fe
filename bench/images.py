"""Benchmark of golden image bakes: prints figures, asserts nothing about time.

    sudo .venv/bin/python bench/images.py [--packages tree,jq]

1. cold bake through moat (`compiler.images.bake.bake`, an empty image cache; DIB's download
   cache of .debs stays warm, as on any machine after its first bake);
2. cached bake: the same recipe again (a hash hit: the key is computed, nothing is baked);
3. plain `disk-image-create` of the same elements, same mirrors and same download cache, through
   the same bake.sh (this kernel has no device-mapper: DIB needs the stand-in either way) and
   without moat's bookkeeping (lock, key, atomic rename, image.json);
4. the image's size (qcow2 file and virtual size).
Needs root, diskimage-builder and its programs (make images installs them), and the network
to the Debian mirror. Boot-to-SSH and reinstall-to-SSH times come from the VM boot test
(tests/test_image_boot.py prints them with pytest -s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compiler.images import bake as baking  # noqa: E402
from compiler.images.recipe import ImageRecipe, elements_dir  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packages", default="", help="extra packages, comma-separated")
    args = p.parse_args()
    recipe = ImageRecipe("bench", "debian", "bookworm", (), tuple(filter(None, args.packages.split(","))))
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        os.environ["MOAT_IMAGES_DIR"] = str(Path(tmp) / "images")
        t = time.perf_counter()
        image = baking.bake(recipe, lambda line: print(f"  {line}", file=sys.stderr)).path
        cold = time.perf_counter() - t
        t = time.perf_counter()
        again = baking.bake(recipe).path
        cached = time.perf_counter() - t
        assert again == image
        info = json.loads(subprocess.run(["qemu-img", "info", "--output", "json", str(image)],
                                         capture_output=True, text=True, check=True).stdout)

        plain_dir = Path(tmp) / "plain"
        (plain_dir / "work").mkdir(parents=True)
        env = {**os.environ, "PATH": f"{Path(baking.disk_image_create()).parent}:{os.environ['PATH']}",
               "ELEMENTS_PATH": str(elements_dir()), "DIB_RELEASE": recipe.release, **baking.mirrors(recipe),
               "DIB_MOAT_IMAGE_JSON": "{}", "DIB_IMAGE_CACHE": str(baking.dib_cache()),
               "TMPDIR": str(plain_dir / "work"), "DIB_MOAT_OUT": str(plain_dir), "DIB_MOAT_RECIPE_KEY": "",
               "MOAT_DM_SHIM": "" if baking.device_mapper() else str(baking.SHIM_DIR),
               "MOAT_AS_ROOT": str(baking.AS_ROOT_DIR)}
        cmd = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private",
               "sh", str(baking.BAKE_SCRIPT), "-a", "amd64", "-t", "qcow2", "-o", str(plain_dir / "plain"),
               *(["-p", ",".join(recipe.packages)] if recipe.packages else []), *recipe.all_elements]
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        plain = time.perf_counter() - t
        plain_size = (plain_dir / "plain.qcow2").stat().st_size
        image_size = image.stat().st_size  # before the temporary directory goes

    print(f"image {recipe.name} ({' '.join(recipe.all_elements)}; packages: {' '.join(recipe.packages) or '-'})")
    print(f"  cold bake via moat            {cold:8.1f} s")
    print(f"  cached bake (hash hit)        {cached * 1000:8.1f} ms")
    print(f"  plain disk-image-create       {plain:8.1f} s")
    print(f"  qcow2 file                    {image_size / 2**20:8.0f} MiB (plain: {plain_size / 2**20:.0f} MiB)")
    print(f"  virtual size                  {info['virtual-size'] / 2**20:8.0f} MiB")


if __name__ == "__main__":
    main()
