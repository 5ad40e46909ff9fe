"""`moat secrets rotate openvpn-client-<c>`, journaled: a rotation stopped at any point (power
cut, SIGKILL, a full disk) is finished by the next `moat secrets rotate` or `init`, so the old
certificate always ends revoked and crl.pem always agrees with index.txt.

A rotation touches six files: the client's pair (renamed to *.old, then issued anew) and the
CRL's three (index.txt, crlnumber, crl.pem). Without a journal, a stop between them left a state
no later run could read: the pair renamed but none issued (init then issued a new pair and
never revoked the old certificate), a new pair but the old CRL (the old certificate valid), or
a crl.pem that revokes it beside an index.txt that does not (the next rotation of another client
signed its CRL from index.txt and dropped the revocation).

So, the steps, each one idempotent, each file written to a temporary name, fsync'ed and renamed
into place (and its directory fsync'ed):

    1. JOURNAL written: the client, its files, the old certificate (PEM, public) and its serial.
       From here the rotation goes forward: whoever finds the journal finishes it.
    2. the old pair renamed to *.old (a file already renamed is left alone)
    3. a new pair issued when the certificate is not there yet (key first, then the certificate:
       a certificate in place means the pair is complete)
    4. the old certificate revoked in index.txt unless it already is, and the CRL signed from
       that index: index.txt, crlnumber, crl.pem, in that order (signing again after a stop only
       spends a CRL number)
    5. JOURNAL removed.

Every run (init, rotate) holds an exclusive flock on the secrets directory, finishes a pending
rotation first and removes the scratch directories (.moat-secrets.*, which may hold a private
key) and temporary files (.*.moat-new) that a stopped run left. MOAT_TEST_KILL_AT=<step> (tests
only) kills the process with SIGKILL at a step: KILL_POINTS."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .media.layout import OPENVPN_DIR
from .pki import CRL_FILES, kill_point, make_leaf, serial, sign_crl  # noqa: F401 (kill_point: for secrets)

JOURNAL = f"{OPENVPN_DIR}/.moat-rotation.json"
SCRATCH_PREFIX = ".moat-secrets."
NEW_SUFFIX = ".moat-new"
# where a test may kill a rotation (MOAT_TEST_KILL_AT), in the order they are passed
KILL_POINTS = ("journal", "renamed-crt", "renamed", "leaf", "key", "issued", "index", "crlnumber", "crl")


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _staged(path: Path, data: bytes) -> Path:
    """`data` in a new 0600 file beside `path` (.NAME.moat-new), on disk."""
    tmp = path.with_name(f".{path.name}{NEW_SUFFIX}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def replace(path: Path, data: bytes) -> None:
    """Replace (or create) `path` atomically with a 0600 file holding `data`, durably."""
    os.replace(_staged(path, data), path)
    sync_dir(path.parent)


def create(path: Path, data: bytes) -> None:
    """Create `path` atomically (whole or not at all) with a 0600 file holding `data`, durably;
    never replaces an existing file (FileExistsError)."""
    tmp = _staged(path, data)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink()
    sync_dir(path.parent)


@contextlib.contextmanager
def locked(d: Path) -> Iterator[None]:
    """An exclusive flock on the secrets directory for one run of init or rotate: the scratch
    and temporary files sweep removes can then only be a stopped run's."""
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def sweep(d: Path) -> list[Path]:
    """Remove what stopped runs left (under the lock: no run of ours is using them)."""
    gone = []
    for p in sorted(d.glob(SCRATCH_PREFIX + "*")):
        shutil.rmtree(p, ignore_errors=True)
        gone.append(p)
    for p in sorted(d.rglob(f".*{NEW_SUFFIX}")):
        p.unlink(missing_ok=True)
        gone.append(p)
    return gone


def scratch(d: Path) -> tempfile.TemporaryDirectory:
    """A private scratch directory inside `d` (sweep removes it if the run is stopped)."""
    tmp = tempfile.TemporaryDirectory(dir=d, prefix=SCRATCH_PREFIX)
    os.chmod(tmp.name, 0o700)
    return tmp


def revoked(index: bytes) -> set[str]:
    """The serials (upper-case hex, no leading zeros) that an `openssl ca` database revokes."""
    out = set()
    for line in index.decode(errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) >= 4 and fields[0] == "R":
            out.add(fields[3].upper().lstrip("0"))
    return out


def begin(d: Path, name: str, cn: str, files: tuple[str, str]) -> str:
    """Journal the rotation of client `name` (its crt, key), then run it; its old serial."""
    crt = d / files[0]
    record = {"secret": name, "cn": cn, "files": list(files), "serial": serial(crt),
              "certificate": crt.read_text()}
    replace(d / JOURNAL, (json.dumps(record, indent=1) + "\n").encode())
    kill_point("journal")
    return finish(d)


def pending(d: Path) -> dict | None:
    path = d / JOURNAL
    return json.loads(path.read_text()) if path.exists() else None


def finish(d: Path) -> str:
    """Finish the journaled rotation (each step done only when not done yet): the old serial."""
    j = pending(d)
    assert j is not None
    crt, key = (d / f for f in j["files"])
    ca_crt, ca_key = d / OPENVPN_DIR / "ca.crt", d / OPENVPN_DIR / "ca.key"
    for path in (crt, key):  # 2. the old pair aside
        old = path.with_name(path.name + ".old")
        if path.exists() and not old.exists():
            os.rename(path, old)
            sync_dir(path.parent)
            kill_point("renamed-crt" if path == crt else "renamed")
    if not crt.exists():  # 3. the new pair
        with scratch(d) as work:
            new_crt, new_key = make_leaf(Path(work), ca_crt, ca_key, j["cn"], "clientAuth")
        replace(key, new_key)
        kill_point("key")
        replace(crt, new_crt)
    kill_point("issued")
    index_path, number_path, crl_path = (d / f for f in (CRL_FILES[1], CRL_FILES[2], CRL_FILES[0]))
    index = index_path.read_bytes()
    with scratch(d) as work:  # 4. the CRL: revoked in the index, signed from it
        old_crt = Path(work) / "old.crt"
        old_crt.write_text(j["certificate"])
        revoke = () if j["serial"].upper().lstrip("0") in revoked(index) else (old_crt,)
        crl, index, number = sign_crl(Path(work), ca_crt, ca_key, index, number_path.read_bytes(), revoke)
    replace(index_path, index)
    kill_point("index")
    replace(number_path, number)
    kill_point("crlnumber")
    replace(crl_path, crl)
    kill_point("crl")
    (d / JOURNAL).unlink()  # 5.
    sync_dir((d / JOURNAL).parent)
    return j["serial"]
