"""`moat iso`: the install media of a bundle (the package docstring says what they hold)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from ..diagnostics import Diagnostic
from ..store import MANIFEST
from .bundle import Bundle, load_bundle
from .images import baked_images, image_files
from .layout import CIDATA_LABEL, HOST_KICKSTART, KS_PATH, MEDIUM_BUNDLE, MEDIUM_LABEL, SEED_DIR, SUMS, \
    medium_secret_name, secrets_read_by, seed_name
from .medium import File, Medium, Progress, Result, error
from .remaster import base_identity, check_base_iso, remaster
from .reproducible import derived_epoch, source_date
from .secret_files import secret_files
from .seed_iso import seed_files, seed_kinds, seed_sums
from .write import new_iso, write_bytes, write_new


def default_output(out: Path, bundle: Bundle) -> Path:
    """OUT/iso/<blueprint>/: the media of each blueprint built into one OUT in its own directory, since
    seeds are named by their VM (nextcloud-cidata.iso) and two blueprints may have a VM of one name."""
    return out / "iso" / bundle.name / f"{bundle.name}-host.iso"


def build_media(bundle_path: Path, output: Path, base_iso: Path | None = None, secrets: Path | None = None,
                progress: Progress | None = None, environ: dict | None = None) -> Result:
    """Write the seeds beside `output` and the host ISO at `output` (module docstring). Nothing is
    written when an error is found; `environ` stands for os.environ (SOURCE_DATE_EPOCH)."""
    try:
        return _build_media(bundle_path, Path(output), base_iso, secrets, progress, environ)
    except OSError as exc:
        where = exc.filename or output
        raise error("iso-write", f"cannot write the install media ({where}): {exc.strerror or exc}",
                     hint="check the free space and permissions of the output directory (--output)") from None


def reproducible_seed(bundle: Bundle, environ: dict | None) -> tuple[bytes, int]:
    """What makes every medium of a bundle the same bytes each time: a seed and a date."""
    bundle_seed = hashlib.sha256(b"moat-iso-v1\0" + bundle.manifest_bytes).digest()
    return bundle_seed, source_date(bundle_seed, environ=environ)


def seed_media(bundle: Bundle, directory: Path, secrets: Path | None) -> list[tuple[Medium, bytes]]:
    """Every VM's seed ISO, in memory (they are small), named as its domain attaches it in
    `directory`. Its bytes depend only on what it carries: the same files and secrets, the same
    ISO, whatever else changed in the bundle, so a deploy tells a VM whose seed changed
    (reinstalled) from one whose seed did not (left alone). Not on SOURCE_DATE_EPOCH either: its
    date derives from its files, so a deploy run without the variable that `moat iso` had does
    not reinstall every VM."""
    seeds = []
    for vm, kind in seed_kinds(bundle):
        files = seed_files(bundle, vm, kind, secrets)
        label = CIDATA_LABEL if kind == "cidata" else MEDIUM_LABEL
        h = hashlib.sha256(f"moat-seed-v1\0{vm}\0{kind}\0".encode())
        for f in files:
            h.update(f"{f.path}\0{f.mode:o}\0{len(f.content)}\0".encode() + f.content)
        content_seed = h.digest()
        epoch = derived_epoch(content_seed)
        buf = io.BytesIO()
        new_iso(label, files, epoch, content_seed, buf)
        names = tuple(medium_secret_name(f.path) for f in files if f.mode == 0o400)
        data = buf.getvalue()
        path = directory / seed_name(vm, kind)  # the volume name the VM's domain attaches
        seeds.append((Medium(kind, vm, path, label, hashlib.sha256(data).hexdigest(), len(data), names), data))
    return seeds


def _build_media(bundle_path: Path, output: Path, base_iso: Path | None, secrets: Path | None,
                 progress: Progress | None, environ: dict | None) -> Result:
    bundle = load_bundle(bundle_path)
    if HOST_KICKSTART not in bundle.manifest["files"]:
        raise error("iso-no-kickstart", f"the bundle {bundle.root} has no {HOST_KICKSTART}",
                     hint="rebuild the blueprint with a moat that renders the host kickstart")
    if base_iso is not None:
        check_base_iso(base_iso)
        if base_iso.resolve() == output.resolve():
            raise error("iso-output", f"{output} is the base ISO itself",
                         hint="write the remastered ISO elsewhere (--output); the base stays as downloaded")
    if secrets is not None and not secrets.is_dir():
        raise error("iso-secret-missing", f"secrets directory {secrets} does not exist",
                     hint="create it with one file per secret name, readable only by you (chmod 700)")
    bundle_seed, epoch = reproducible_seed(bundle, environ)
    # every medium's files first, seeds in memory (they are small): a missing secret or a bad
    # base ISO fails before anything is written
    host_ks = bundle.read(HOST_KICKSTART)
    host_files = [File(KS_PATH.lstrip("/"), host_ks, 0o444),
                  File(f"{MEDIUM_BUNDLE}/{MANIFEST}", bundle.manifest_bytes, 0o444)]
    host_files += [File(f"{MEDIUM_BUNDLE}/{rel}", bundle.read(rel), bundle.mode(rel)) for rel in bundle.files()]
    images = baked_images(bundle)
    host_secrets = secret_files(secrets_read_by(host_ks), secrets, f"the host kickstart ({HOST_KICKSTART})")
    seeds = seed_media(bundle, output.parent, secrets)
    for medium, _ in seeds:
        if medium.path.resolve() == output.resolve():
            raise error("iso-output", f"{output} is also the name of VM {medium.vm}'s seed",
                         hint="name the host ISO differently (--output)")
    host_files += [File(f"{SEED_DIR}/{m.path.name}", data, 0o400 if m.secrets else 0o444) for m, data in seeds]
    if seeds:
        host_files.append(File(f"{SEED_DIR}/{SUMS}", seed_sums(m for m, _ in seeds), 0o444))
    host_files += host_secrets
    host_files += image_files(images, progress)  # last: reads every image once
    title = f"Install unattended: moat blueprint {bundle.name} (ks.cfg)".replace("'", "")
    secret_names = tuple(sorted({medium_secret_name(f.path) for f in host_secrets}
                                | {n for m, _ in seeds for n in m.secrets}))
    image_names = tuple(image.file for image in images)
    output.parent.mkdir(parents=True, exist_ok=True)
    warnings: list[Diagnostic] = []
    if base_iso is None:
        digest = write_new(output, MEDIUM_LABEL, host_files, epoch, bundle_seed + b"\0host-oemdrv", progress)
        host = Medium("host-oemdrv", None, output, MEDIUM_LABEL, digest, output.stat().st_size, secret_names,
                      images=image_names)
    else:
        seed = bundle_seed + b"\0host\0" + base_identity(base_iso)
        label, menus, warnings, digest = remaster(base_iso, output, host_files, title, epoch, seed, progress)
        host = Medium("host", None, output, label, digest, output.stat().st_size, secret_names, tuple(menus),
                      image_names)
    for medium, data in seeds:
        write_bytes(medium.path, data, bool(medium.secrets))
    media = [m for m, _ in seeds] + [host]
    return Result(tuple(media), tuple(warnings))
