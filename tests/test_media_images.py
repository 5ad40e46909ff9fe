"""Golden images on the host's install medium (compiler/media/images.py), through the real CLI.

The bundle lists its images in host/images.json; `moat iso` takes each from the image cache
(MOAT_IMAGES_DIR, at compiler.images.recipe.baked_path) and writes it as
moat/images/NAME-KEY.qcow2 with moat/images/SHA256SUMS. The images here are real qcow2 files
made by `qemu-img create`; the ISO is read back with pycdlib. A bundle whose images are not all
baked is refused with one error per image, at the image's line in the blueprint, and nothing is
written. (The host kickstart's %post that copies them to the host: tests/test_kickstart.py.)
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
from pathlib import Path

import pytest

from compiler.images.recipe import baked_path
from compiler.media.layout import HOST_IMAGES, IMAGES_DIR, SUMS
from compiler.pipeline import build_file
from compiler.store import MANIFEST, Artifact, store

from .conftest import ROOT, run_moat, without_images

EXAMPLE = ROOT / "blueprints" / "example.yaml"


IMAGES = {"nextcloud": "0123456789abcdef0123456789abcdef", "web": "fedcba9876543210fedcba9876543210"}
DECLARED = "\nimages:\n" + "".join(f"  - name: {n}\n    distribution: debian\n    release: bookworm\n" for n in IMAGES)


def with_images(out: Path, images: dict[str, str]) -> Path:
    """A new generation of the bundle in `out` that lists `images` (name -> key) in host/images.json
    and declares them in its blueprint.yaml, as a moat with golden images writes it."""
    current = (out / "current").resolve()
    manifest = json.loads((current / MANIFEST).read_bytes())
    files = {rel: Artifact((current / rel).read_bytes(), int(entry["mode"], 8)) for rel, entry in manifest["files"].items()}
    listing = {"images": [{"name": n, "key": k, "file": f"{n}-{k}.qcow2", "inputs": {"release": "bookworm"}}
                          for n, k in sorted(images.items())]}
    files[HOST_IMAGES] = Artifact(json.dumps(listing, indent=2).encode() + b"\n")
    files["blueprint.yaml"] = Artifact(files["blueprint.yaml"].content + DECLARED.encode(),
                                       files["blueprint.yaml"].mode)
    meta = {k: v for k, v in manifest.items() if k != "files"}
    digest = hashlib.sha256(json.dumps(listing).encode() + current.name.encode()).hexdigest()[:32]
    return store(out, manifest["name"], digest, files, meta).path


def bake(cache: Path, name: str, key: str, size: str = "64M") -> Path:
    """A real (empty) qcow2 where `moat images` leaves a baked image."""
    path = baked_path(name, key)
    assert path.is_relative_to(cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """(out, the bundle without images, the bundle with IMAGES, the example's secrets directory)."""
    from compiler import secrets

    tmp = tmp_path_factory.mktemp("images")
    blueprint = without_images(EXAMPLE, tmp)
    build_file(blueprint, tmp / "out", tools=False)
    plain = (tmp / "out" / "current").resolve()
    secrets.init(blueprint, tmp / "secrets")
    return tmp / "out", plain, with_images(tmp / "out", IMAGES), tmp / "secrets"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOAT_IMAGES_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def read(iso_path: Path, path: str) -> bytes:
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        buf = io.BytesIO()
        iso.get_file_from_iso_fp(buf, rr_path="/" + path)
        return buf.getvalue()
    finally:
        iso.close()


def test_the_host_medium_carries_every_golden_image_with_its_sum(bundle, cache, tmp_path):
    out, _, _, secrets_dir = bundle
    baked = {name: bake(cache, name, key) for name, key in IMAGES.items()}
    output = tmp_path / "host.iso"
    proc = run_moat("iso", "--out", out, "--output", output, "--secrets", secrets_dir, env={"MOAT_IMAGES_DIR": str(cache)})
    assert proc.returncode == 0, proc.stderr
    files = {name: f"{name}-{key}.qcow2" for name, key in IMAGES.items()}
    for name, file in files.items():
        assert read(output, f"{IMAGES_DIR}/{file}") == baked[name].read_bytes()
    sums = read(output, f"{IMAGES_DIR}/{SUMS}").decode()
    assert sums == "".join(f"{hashlib.sha256(baked[n].read_bytes()).hexdigest()}  {files[n]}\n" for n in sorted(files))
    assert f"golden images: {', '.join(files[n] for n in sorted(files))}" in proc.stdout


def test_unbaked_images_are_refused_all_at_once_and_nothing_is_written(bundle, cache, tmp_path):
    out, _, stored, secrets_dir = bundle
    bake(cache, "other", IMAGES["web"])  # a baked image of another name is not theirs
    output = tmp_path / "iso" / "host.iso"
    proc = run_moat("iso", "--out", out, "--output", output, "--secrets", secrets_dir,
                    env={"MOAT_IMAGES_DIR": str(cache)})
    assert proc.returncode == 1
    errors = re.findall(r"^(.+):(\d+):(\d+): error\[image-not-baked\]: image (\w+) \(key (\w+)\) is not baked: (\S+) "
                        r"does not exist$", proc.stderr, re.M)
    assert [(Path(f), name, key, Path(p)) for f, _, _, name, key, p in errors] == [
        (stored / "blueprint.yaml", n, k, cache / f"{n}-{k}" / f"{n}.qcow2") for n, k in sorted(IMAGES.items())]
    lines = (stored / "blueprint.yaml").read_text().splitlines()
    for _, line, column, name, _, _ in errors:  # each at its declaration's name
        assert lines[int(line) - 1][int(column) - 1:] == name
    assert proc.stderr.count("hint: bake them first: moat images BLUEPRINT (or make images)") == 2
    assert "moat iso: nothing written" in proc.stderr
    assert not output.parent.exists()


def test_a_bundle_without_images_gets_none(bundle, cache, tmp_path):
    from compiler.media.build import build_media

    _, plain, _, secrets_dir = bundle
    assert json.loads((plain / HOST_IMAGES).read_bytes()) == {"images": []}
    result = build_media(plain, tmp_path / "host.iso", secrets=secrets_dir)
    host = result.media[-1]
    assert host.kind == "host-oemdrv" and host.images == ()
    with pytest.raises(Exception, match="not found|Could not find"):
        read(host.path, f"{IMAGES_DIR}/{SUMS}")
