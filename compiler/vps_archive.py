"""`moat vps-archive`: the VPS front's files and its OpenVPN keys in one archive, to install with
`tar xzf FRONT.tar.gz && sudo moat-vps/moat-install` on the (Debian 12) VPS.

The VPS is rented: it cannot boot install media, so the bundle's vps/ tree travels as a tar.gz:

    moat-vps/                          0755
    moat-vps/manifest.json             0444  the store manifest's name, hashes and compiler, and
                                             its entries of vps/ with paths relative to moat-vps/
    moat-vps/moat-install              0555  the install script (render/vps_install.py)
    moat-vps/<path>                    the bundle file vps/<path>, its store mode
    moat-vps/secrets/                  0700
    moat-vps/secrets/openvpn/          0700
    moat-vps/secrets/openvpn/<file>    0600  ca.crt, crl.pem, server.crt, server.key, tls-crypt.key
    moat-vps/secrets/totp/vps/<user>   0600  with vps.sshd.totp: each VPS user's TOTP secret
                                             (the VPS's users only, never the host's)

The secrets are the VPS's only (vps_install.SECRETS and vps_install.totp_copies), from the secrets
directory of `moat secrets init`: never the CA's key nor a client's key, nor the host users' TOTP
secrets. This is where bundle and secrets meet, as in
`moat iso`: the store never holds a secret.

The bundle is built first as `moat build` does (same store path when unchanged) and read back
verified against its manifest. Reproducible: members sorted, owner root (0/0), every mtime (and
gzip's) SOURCE_DATE_EPOCH or else a date derived from the bundle's manifest (media/reproducible.py);
same bundle and secrets, same bytes. The archive holds a private key: it is written 0600, to a
temporary file beside the output renamed into place when complete (a killed run's is removed by
the next: media/temporary.py).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import attrs

from . import private
from .diagnostics import Diagnostic, MoatError
from .media.bundle import load_bundle
from .media.reproducible import source_date
from .media.temporary import ARCHIVE_PREFIX, temporary
from .render.vps_install import PREFIX, SCRIPT, SECRETS, SECRETS_DIR, TotpCopy, totp_copies

TOP = "moat-vps"
MEMBER_SECRETS = f"{TOP}/{SECRETS_DIR}"


def _error(rule: str, message: str, hint: str | None = None) -> MoatError:
    return MoatError([Diagnostic(rule, message, hint=hint)])


@attrs.frozen
class Member:
    name: str
    content: bytes | None  # None: a directory
    mode: int


@attrs.frozen
class Result:
    path: Path
    store: Path
    sha256: str
    size: int
    members: tuple[str, ...]
    vps: str


def _has_vps(blueprint: Path) -> bool:
    """Whether the blueprint has a `vps` (True when it cannot be read: the build reports why)."""
    from . import load

    try:
        data = load.load_file(blueprint).data
    except MoatError:
        return True
    return not isinstance(data, dict) or data.get("vps") is not None


def secret_files(secrets: Path, blueprint: str, totp: list[TotpCopy] | tuple = ()) -> list[Member]:
    """The VPS's OpenVPN files and its users' TOTP secrets (`totp`) from the secrets directory;
    every missing one is an error."""
    from .secrets import check_dir

    d = check_dir(secrets, create=False)
    private.check(d, [s.pattern for s in SECRETS] + [t.secret for t in totp])
    problems, found = [], []
    for s in SECRETS:
        path = d / s.pattern
        if not path.is_file() or path.stat().st_size == 0:
            what = "does not exist" if not path.exists() else ("is empty" if path.is_file() else "is not a file")
            problems.append(Diagnostic("vps-secret-missing", f"{path} {what}: the VPS's OpenVPN server needs it "
                                       f"({s.dest})", hint=f"make it with: moat secrets init {blueprint} --dir {d}"))
            continue
        found.append(Member(f"{MEMBER_SECRETS}/{s.pattern}", path.read_bytes(), 0o600))
    for t in totp:
        path = d / t.secret
        if not path.is_file() or path.stat().st_size == 0:
            what = "does not exist" if not path.exists() else ("is empty" if path.is_file() else "is not a file")
            problems.append(Diagnostic("vps-secret-missing", f"{path} {what}: {t.user.name}'s TOTP secret, which "
                                       "sshd on the VPS asks a code of (vps.sshd.totp)",
                                       hint=f"make it with: moat secrets init {blueprint} --dir {d}"))
            continue
        found.append(Member(f"{TOP}/{t.source}", path.read_bytes(), 0o600))
    if problems:
        raise MoatError(problems)
    return found


def members(store: Path, secrets: list[Member]) -> list[Member]:
    """Every member of the archive, directories included, in name order."""
    bundle = load_bundle(store)
    paths = bundle.files(PREFIX)
    assert SCRIPT in paths, f"{store} has no {SCRIPT}"
    files = [Member(f"{TOP}/{p[len(PREFIX):]}", bundle.read(p), int(bundle.manifest["files"][p]["mode"], 8))
             for p in paths]
    meta = {k: v for k, v in bundle.manifest.items() if k != "files"}
    meta["files"] = {p[len(PREFIX):]: bundle.manifest["files"][p] for p in paths}
    meta["bundle_prefix"] = PREFIX
    files.append(Member(f"{TOP}/manifest.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode(), 0o444))
    files += secrets
    dirs: dict[str, int] = {}
    for m in files:
        parts = m.name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            name = "/".join(parts[:i])
            dirs[name] = 0o700 if (name + "/").startswith(MEMBER_SECRETS + "/") else 0o755
    out = files + [Member(name, None, mode) for name, mode in dirs.items()]
    return sorted(out, key=lambda m: m.name)


def archive_bytes(items: list[Member], epoch: int) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for m in items:
            info = tarfile.TarInfo(m.name + ("/" if m.content is None else ""))
            info.type = tarfile.DIRTYPE if m.content is None else tarfile.REGTYPE
            info.mode = m.mode
            info.mtime = epoch
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.size = 0 if m.content is None else len(m.content)
            tar.addfile(info, None if m.content is None else io.BytesIO(m.content))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=epoch, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with temporary(path, ARCHIVE_PREFIX) as tmp:  # 0600, and a killed run's is removed by the next
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def vps_archive(blueprint: str | Path, secrets: Path, output: Path | None = None, out: Path = Path("out"),
                tools: bool = True, tools_mode: str | None = None, progress=lambda line: None) -> Result:
    """Build the blueprint (as `moat build --out OUT`), then write its VPS archive."""
    from .pipeline import build_file

    if not _has_vps(Path(blueprint)):
        raise _error("vps-archive-no-vps", f"{blueprint} has no vps: there is no VPS to install",
                     hint="a VPS front is the blueprint's `vps:` section (docs/blueprint.md, blueprints/vps-front.yaml)")
    compiled, stored = build_file(blueprint, out, tools=tools, tools_mode=tools_mode, progress=progress)
    vps = compiled.plan.blueprint.vps
    assert vps is not None
    found = secret_files(Path(secrets), str(blueprint), totp_copies(compiled.plan))
    items = members(stored.path, found)
    manifest = next(m for m in items if m.name == f"{TOP}/manifest.json")
    data = archive_bytes(items, source_date(manifest.content))
    # beside the other blueprints' archives, never over them (two blueprints may name their VPS alike)
    target = Path(output) if output else out / "vps" / compiled.plan.blueprint.name / f"{vps.name}.tar.gz"
    write_atomic(target, data)
    return Result(target, stored.path, hashlib.sha256(data).hexdigest(), len(data),
                  tuple(m.name for m in items), vps.name)
