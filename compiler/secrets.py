"""`moat secrets`: the secrets directory a blueprint needs, made, listed and rotated here.

Secrets never enter the bundle: blueprint fields hold `secret:NAME` references and the install
media get the values from a secrets directory (`moat iso --secrets DIR`). This module keeps
that directory (default `secrets/` beside the Makefile, git-ignored):

    DIR/<NAME>                         a passphrase: 32 URL-safe random characters, one line.
                                       Every `secret:NAME` of the blueprint, every name a
                                       kickstart or user-data of the bundle reads from
                                       moat/secrets/<NAME> (the same lookup as `moat iso`), and
                                       `<vm>-luks` for each VM with encrypted data disks.
    DIR/openvpn/ca.crt, ca.key         only with `vps`: the OpenVPN CA (EC P-256, 10 years)
    DIR/openvpn/server.crt, server.key the VPS's certificate (CN = vps.name, serverAuth, 3 years)
    DIR/openvpn/clients/<c>.crt, .key  one per vps.openvpn.clients (CN = client name, clientAuth)
    DIR/openvpn/tls-crypt.key          the control-channel key (OpenVPN static key V1, 2048 bit)
    DIR/openvpn/crl.pem                the certificate revocation list, signed by the CA, for the
                                       VPS (/etc/openvpn/server/crl.pem, crl-verify); with its
    DIR/openvpn/index.txt, crlnumber   `openssl ca` state: the revoked certificates, the next
                                       CRL number
    DIR/totp/host/<user>               with host.sshd.totp: each host user's TOTP secret (secret
                                       `totp-host-<user>`), in the ~/.google_authenticator format
                                       of pam_google_authenticator; the kickstart installs it
    DIR/totp/vps/<user>                with vps.sshd.totp: each VPS user's (`totp-vps-<user>`);
                                       moat-install installs it from the VPS archive

TOTP: sshd asks for a code after the key (pam_google_authenticator without nullok), so a user
without ~/.google_authenticator is refused. An unattended install would lock everyone out;
instead moat makes each (machine, user) secret here and the installs put it in place. The file
is what `google-authenticator --time-based --disallow-reuse --rate-limit=3 --rate-time=30
--window-size=3` writes (its FILEFORMAT): the base32 secret (TOTP_SECRET_BYTES random bytes,
160 bits as RFC 4226 recommends for HMAC-SHA1, no padding), then the option lines
`" RATE_LIMIT 3 30`, `" WINDOW_SIZE 3`, `" DISALLOW_REUSE`, `" TOTP_AUTH`. No scratch codes:
moat keeps the secret, so a lost phone is re-enrolled from `moat secrets totp` (or the secret
rotated); scratch codes would be a second, static, 8-digit way in sitting next to it on every
medium. A user enrolls before the first login with `moat secrets totp BLUEPRINT USER`, which
prints the otpauth:// URI (and a QR code when qrencode is installed). `rotate totp-host-<user>`
makes a new secret (old one kept as .old): the phone must be enrolled again and the new file
installed on the machine.

The directory and its subdirectories are 0700, every file 0600. Nothing is ever overwritten:
`init` creates what is missing; `rotate` moves the current value to NAME.old first. The one
exception is the CRL: `rotate openvpn-client-<c>` revokes the old certificate (its serial,
reason superseded) and re-signs crl.pem, index.txt and crlnumber, each replaced atomically. That
rotation is journaled (compiler/pki_rotation.py): stopped at any point, the next init or rotate
finishes it (old certificate revoked, CRL and index agreeing) and removes what the stopped run
left. init and rotate hold an flock on the directory while they run. Every command that reads the
directory (this one, moat iso, moat vps-archive) refuses one that is not private: another owner
(secrets-owner), group/other bits or a symbolic link (secrets-mode): compiler/private.py.
The PKI and the CRL are made with the `openssl` command (`openssl ca -revoke/-gencrl` for the
CRL); the tls-crypt key with `openvpn --genkey secret` when openvpn is installed, else written
here in the same format.

The CRL is valid for CRL_DAYS (the CA's lifetime) from each signing: OpenVPN 2.4 and later
with OpenSSL (2.6 included) check the CRL's nextUpdate like any X.509 verifier and refuse
every client with "VERIFY ERROR: ... CRL has expired" once it has passed; a missing CRL file
is a fatal option error at start. A CRL made by `init` for a PKI that has clients/<c>.crt.old
files (rotations made before moat had a CRL) revokes those old certificates.
"""

from __future__ import annotations

import base64
import os
import re
import secrets as _random
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import quote, urlencode

import attrs

from . import pki_rotation, private
from .pki import CRL_FILES, _openssl, _run, make_ca, make_leaf, serial, sign_crl  # noqa: F401 (serial: for tests)
from .diagnostics import Diagnostic, MoatError
from .media.layout import CLIENTS_DIR, OPENVPN_DIR, TOTP_DIR, secrets_read_by, totp_file, vm_luks_secret

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / "secrets" if (REPO / "Makefile").exists() else Path("secrets")

PASSPHRASE_CHARS = 32          # secrets.token_urlsafe(24) is exactly 32 characters
MAY_BE_EMPTY = (CRL_FILES[1],)  # nothing revoked yet
TOTP_MACHINES = ("host", "vps")
TOTP_PREFIX = "totp-"
TOTP_SECRET_BYTES = 20          # 160 bits: RFC 4226's recommended HMAC-SHA1 key length
TOTP_ISSUER = "moat"
TOTP_PERIOD = 30
TOTP_DIGITS = 6
TOTP_ALGORITHM = "SHA1"         # what pam_google_authenticator computes
# google-authenticator's own defaults for --rate-limit=3 --rate-time=30 --window-size=3 --disallow-reuse -t
TOTP_OPTIONS = ('" RATE_LIMIT 3 30', '" WINDOW_SIZE 3', '" DISALLOW_REUSE', '" TOTP_AUTH')
TLS_CRYPT_HEADER = "-----BEGIN OpenVPN Static key V1-----"
TLS_CRYPT_FOOTER = "-----END OpenVPN Static key V1-----"
CLIENT_PREFIX = "openvpn-client-"
LUKS_HINT = ("A LUKS passphrase already in use on a machine does not change by itself: on that machine run "
             "`cryptsetup luksChangeKey DEVICE` (old passphrase, then the new one from {path}), "
             "then delete {old}")


def _error(rule: str, message: str, hint: str | None = None) -> MoatError:
    return MoatError([Diagnostic(rule, message, hint=hint)])


# --- what a blueprint needs ------------------------------------------------------------------

@attrs.frozen
class Secret:
    """One secret the blueprint needs: `name` (what `rotate` takes), `kind` and its files
    (relative to the secrets directory)."""

    name: str
    kind: str            # passphrase | openvpn-ca | openvpn-server | openvpn-client | openvpn-crl | openvpn-tls-crypt | totp
    files: tuple[str, ...]
    cn: str | None = None  # certificate common name
    machine: str | None = None  # totp: host | vps
    user: str | None = None     # totp: the user whose secret it is
    label: str | None = None    # totp: <user>@<machine's name>, the authenticator app's account name


def totp_secrets(plan) -> list[Secret]:
    """One TOTP secret per user sshd lets in on each machine whose sshd asks for a code."""
    from .derive import _users

    bp = plan.blueprint
    out = []
    if bp.host.sshd.totp:
        fqdn = f"{bp.host.name}.{bp.host.domain}"
        out += [Secret(f"{TOTP_PREFIX}host-{u.name}", "totp", (totp_file("host", u.name),), machine="host",
                       user=u.name, label=f"{u.name}@{fqdn}") for u in plan.host_users]
    if bp.vps is not None and bp.vps.sshd.totp:
        out += [Secret(f"{TOTP_PREFIX}vps-{u.name}", "totp", (totp_file("vps", u.name),), machine="vps",
                       user=u.name, label=f"{u.name}@{bp.vps.name}") for u in _users(bp.users, bp.vps.users)]
    return out


def _references(data) -> Iterator[str]:
    if isinstance(data, str):
        if data.startswith("secret:"):
            yield data[len("secret:"):]
    elif isinstance(data, dict):
        for value in data.values():
            yield from _references(value)
    elif isinstance(data, (list, tuple)):
        for value in data:
            yield from _references(value)


def needed(blueprint: str | Path) -> tuple[str, list[Secret]]:
    """The blueprint's name and every secret it needs (compiles it: a bad blueprint is an error)."""
    from .pipeline import check_file
    from .render.luks import encrypted_volumes

    compiled = check_file(blueprint)
    plan = compiled.plan
    names = set(_references(compiled.source.data))
    for output in compiled.files.values():
        # files of the OpenVPN PKI and TOTP secrets that a kickstart reads (openvpn/..., totp/...)
        # are made below, not passphrases
        names.update(n for n in secrets_read_by(output.content)
                     if not n.startswith((OPENVPN_DIR + "/", TOTP_DIR + "/")))
    names.update(vm_luks_secret(rvm.name) for rvm in plan.vms if encrypted_volumes(rvm))
    out = [Secret(n, "passphrase", (n,)) for n in sorted(names)]
    vps = plan.blueprint.vps
    if vps is not None:
        out.append(Secret("openvpn-ca", "openvpn-ca", (f"{OPENVPN_DIR}/ca.crt", f"{OPENVPN_DIR}/ca.key"),
                          f"moat {plan.blueprint.name} OpenVPN CA"))
        out.append(Secret("openvpn-server", "openvpn-server",
                          (f"{OPENVPN_DIR}/server.crt", f"{OPENVPN_DIR}/server.key"), vps.name))
        for c in sorted(vps.openvpn.clients, key=lambda c: c.name):
            out.append(Secret(CLIENT_PREFIX + c.name, "openvpn-client",
                              (f"{CLIENTS_DIR}/{c.name}.crt", f"{CLIENTS_DIR}/{c.name}.key"), c.name))
        out.append(Secret("openvpn-crl", "openvpn-crl", CRL_FILES))
        out.append(Secret("openvpn-tls-crypt", "openvpn-tls-crypt", (f"{OPENVPN_DIR}/tls-crypt.key",)))
    out += totp_secrets(plan)
    return plan.blueprint.name, out


# --- the directory ---------------------------------------------------------------------------

def _in_store(path: Path) -> bool:
    """Inside a moat output's store (OUT/store/... beside OUT/current or OUT/generations)?"""
    for p in (path, *path.parents):
        if p.name == "store" and any((p.parent / n).exists() for n in ("current", "generations")):
            return True
    return False


def _git_exposed(path: Path) -> str | None:
    """When `path` sits in a git work tree and git does not ignore it: the work tree's top."""
    git = shutil.which("git")
    probe = next((p for p in (path, *path.parents) if p.is_dir()), None)
    if git is None or probe is None:
        return None
    top = subprocess.run([git, "-C", str(probe), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode != 0:
        return None
    ignored = subprocess.run([git, "-C", top.stdout.strip(), "check-ignore", "-q", "--no-index", str(path) + "/"],
                             capture_output=True)
    return None if ignored.returncode == 0 else top.stdout.strip()


def check_dir(directory: Path, create: bool) -> Path:
    """The secrets directory, resolved; refuses a place where secrets would leak."""
    d = Path(os.path.abspath(directory))
    real = d.resolve()
    if _in_store(real):
        raise _error("secrets-dir-unsafe", f"{d} is inside a moat store: store paths are shared and read-only",
                     hint="keep secrets outside out/, e.g. the default secrets/ beside the Makefile")
    top = _git_exposed(real)
    if top is not None:
        raise _error("secrets-dir-unsafe", f"{d} is inside the git work tree {top} and not ignored: "
                                           "a commit could publish the secrets",
                     hint=f"add it to {top}/.gitignore or use a directory outside the repository")
    if not d.exists():
        if not create:
            return d
        try:
            d.mkdir(mode=0o700, parents=True)
        except OSError as e:
            raise _error("secrets-dir-permission", f"cannot create {d}: {e.strerror}",
                         hint="create it yourself (mkdir -m 700) or choose another --dir") from None
        os.chmod(d, 0o700)
    if not d.is_dir():
        raise _error("secrets-dir-permission", f"{d} is not a directory", hint="choose another --dir")
    if create and not os.access(d, os.W_OK | os.X_OK):
        raise _error("secrets-dir-permission", f"{d} is not writable by you",
                     hint=f"fix its owner or mode (chmod 700 {d}) or choose another --dir")
    return d


def mode_problem(path: Path) -> str | None:
    """Why `path` is not private (owner, group/other bits, a link: compiler/private.py), else None."""
    return private.why(path)


def _mode_errors(d: Path, items: list[Secret]) -> list[Diagnostic]:
    subdirs = (OPENVPN_DIR, CLIENTS_DIR, TOTP_DIR, *(f"{TOTP_DIR}/{m}" for m in TOTP_MACHINES))
    return private.errors(d, [*(sub for sub in subdirs if (d / sub).exists()), *(f for s in items for f in s.files)])


def _mkdirs(d: Path, rel: str) -> None:
    p = d
    for part in Path(rel).parent.parts:
        p = p / part
        if not p.exists():
            p.mkdir(mode=0o700)
            os.chmod(p, 0o700)


def passphrase() -> bytes:
    value = _random.token_urlsafe(24)
    assert len(value) == PASSPHRASE_CHARS
    return (value + "\n").encode()


# --- TOTP ------------------------------------------------------------------------------------

def totp_secret() -> str:
    """A new random TOTP secret, base32 without padding (A-Z, 2-7)."""
    return base64.b32encode(_random.token_bytes(TOTP_SECRET_BYTES)).decode().rstrip("=")


def totp_file_text(secret: str) -> bytes:
    """~/.google_authenticator for `secret`: the secret line, then the option lines."""
    return ("\n".join((secret, *TOTP_OPTIONS)) + "\n").encode()


def read_totp(path: Path) -> str:
    """The base32 secret of a ~/.google_authenticator file (its first line)."""
    first = path.read_text(errors="replace").split("\n", 1)[0].strip()
    if not re.fullmatch(r"[A-Z2-7]+", first):
        raise _error("secrets-totp-invalid", f"{path}: the first line is not a base32 secret",
                     hint="move it away and run moat secrets init again (then enroll the phone again)")
    return first


def otpauth_uri(secret: str, label: str) -> str:
    """The Key URI an authenticator app scans: otpauth://totp/ISSUER:LABEL?secret=...&issuer=..."""
    account = quote(TOTP_ISSUER, safe="") + ":" + quote(label, safe="@")
    query = urlencode({"secret": secret, "issuer": TOTP_ISSUER, "algorithm": TOTP_ALGORITHM,
                       "digits": TOTP_DIGITS, "period": TOTP_PERIOD})
    return f"otpauth://totp/{account}?{query}"


@attrs.frozen
class Enrollment:
    secret: Secret
    path: Path
    uri: str


def totp_enrollments(blueprint: str | Path, user: str, machine: str | None = None,
                     directory: Path | None = None) -> list[Enrollment]:
    """`user`'s TOTP secrets (on `machine`, or every machine asking them for a code) as otpauth URIs."""
    _, items = needed(blueprint)
    d = check_dir(directory or DEFAULT_DIR, create=False)
    totp = [s for s in items if s.kind == "totp"]
    mine = [s for s in totp if s.user == user and (machine is None or s.machine == machine)]
    if not mine:
        asked = sorted({f"{s.user} ({s.machine})" for s in totp})
        where = f"on the {machine}" if machine else "on any machine"
        raise _error("secrets-unknown", f"{user} needs no TOTP secret {where} of {blueprint}",
                     hint=("users with one: " + ", ".join(asked)) if asked
                     else "no sshd of this blueprint asks for a code (host.sshd.totp, vps.sshd.totp)")
    problems = _mode_errors(d, mine) if d.exists() else []
    if problems:
        raise MoatError(problems)
    out = []
    for s in mine:
        path = d / s.files[0]
        if not path.is_file():
            raise _error("secrets-missing", f"{path} does not exist: {s.name} is not made yet",
                         hint=f"make it with: moat secrets init {blueprint} --dir {d}")
        out.append(Enrollment(s, path, otpauth_uri(read_totp(path), s.label or s.user or "")))
    return out


def tls_crypt_key_text() -> bytes:
    """A 2048-bit OpenVPN static key in OpenVPN's own text format (what `openvpn --genkey secret` writes)."""
    hexed = _random.token_bytes(256).hex()
    lines = [hexed[i:i + 32] for i in range(0, len(hexed), 32)]
    return ("#\n# 2048 bit OpenVPN static key\n#\n" + TLS_CRYPT_HEADER + "\n" + "\n".join(lines) + "\n"
            + TLS_CRYPT_FOOTER + "\n").encode()


def make_tls_crypt(work: Path) -> bytes:
    openvpn = shutil.which("openvpn") or shutil.which("openvpn", path="/usr/sbin:/sbin")
    if openvpn is None:
        return tls_crypt_key_text()
    _run([openvpn, "--genkey", "secret", "tls-crypt.key"], work)
    data = (work / "tls-crypt.key").read_bytes()
    (work / "tls-crypt.key").unlink()
    return data


# --- init / rotate / list ----------------------------------------------------------------------

@attrs.frozen
class Report:
    directory: Path
    created: tuple[str, ...] = ()
    existing: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def _present(d: Path, s: Secret) -> tuple[bool, bool]:
    """(all files present, some present)"""
    there = [(d / f).exists() for f in s.files]
    return all(there), any(there)


def _fresh(d: Path, generate: Callable[[Path], dict[str, bytes]]) -> dict[str, bytes]:
    """New values (path -> content), generated in a private scratch dir inside `d`."""
    with pki_rotation.scratch(d) as tmp:
        return generate(Path(tmp))


def _values(d: Path, s: Secret, generate: Callable[[Path], dict[str, bytes]]) -> list[str]:
    """Generate the files of `s`, then create each one."""
    values = _fresh(d, generate)
    for rel, data in values.items():
        _mkdirs(d, rel)
        pki_rotation.create(d / rel, data)
    return list(values)


def _generator(d: Path, s: Secret) -> Callable[[Path], dict[str, bytes]]:
    ca_crt, ca_key = d / OPENVPN_DIR / "ca.crt", d / OPENVPN_DIR / "ca.key"
    if s.kind == "passphrase":
        return lambda work: {s.files[0]: passphrase()}
    if s.kind == "openvpn-ca":
        return lambda work: dict(zip(s.files, make_ca(work, s.cn or "moat OpenVPN CA")))
    if s.kind == "openvpn-tls-crypt":
        return lambda work: {s.files[0]: make_tls_crypt(work)}
    if s.kind == "totp":
        return lambda work: {s.files[0]: totp_file_text(totp_secret())}
    if s.kind == "openvpn-crl":
        # certificates replaced by rotations made before moat had a CRL are revoked right away
        stale = tuple(sorted((d / CLIENTS_DIR).glob("*.crt.old")))
        return lambda work: dict(zip(s.files, sign_crl(work, ca_crt, ca_key, revoke=stale)))
    usage = "serverAuth" if s.kind == "openvpn-server" else "clientAuth"
    return lambda work: dict(zip(s.files, make_leaf(work, ca_crt, ca_key, s.cn or s.name, usage)))


def init(blueprint: str | Path, directory: Path | None = None) -> Report:
    """Create every secret the blueprint needs that is missing; never changes an existing one."""
    _, items = needed(blueprint)
    d = check_dir(directory or DEFAULT_DIR, create=True)
    with pki_rotation.locked(d):
        return _init(d, items, _recover(d, items))


def _recover(d: Path, items: list[Secret]) -> tuple[str, ...]:
    """Under the directory's lock, before anything else: refuse a directory that is not private,
    remove what a stopped run left and finish a stopped rotation (compiler/pki_rotation.py)."""
    problems = _mode_errors(d, items)
    if problems:
        raise MoatError(problems)
    pki_rotation.sweep(d)
    stopped = pki_rotation.pending(d)
    if stopped is None:
        return ()
    old = pki_rotation.finish(d)
    return (f"finished the rotation of {stopped['secret']} that was stopped: its old certificate (serial {old}) "
            f"is revoked in {d / CRL_FILES[0]}; copy it to the VPS as /etc/openvpn/server/crl.pem",)


def _init(d: Path, items: list[Secret], notes: tuple[str, ...]) -> Report:
    problems = []
    for s in items:
        full, some = _present(d, s)
        if some and not full:
            missing = [f for f in s.files if not (d / f).exists()]
            problems.append(Diagnostic("secrets-incomplete", f"{s.name}: {', '.join(str(d / f) for f in missing)} "
                                       f"missing while the rest of {s.name} exists",
                                       hint=f"restore it, or move the rest of {s.name} away and run init again"))
    ca = next((s for s in items if s.kind == "openvpn-ca"), None)
    if ca is not None and not _present(d, ca)[0]:
        issued = [s.name for s in items if s.kind in ("openvpn-server", "openvpn-client", "openvpn-crl")
                  and _present(d, s)[1]]
        if issued:
            problems.append(Diagnostic("secrets-incomplete", f"the OpenVPN CA is missing but {', '.join(issued)} "
                                       "exist (issued by a CA that is gone)",
                                       hint=f"restore {d / OPENVPN_DIR}/ca.crt and ca.key, or move {d / OPENVPN_DIR} "
                                            "away to start a new PKI"))
    if problems:
        raise MoatError(problems)
    if any(s.kind.startswith("openvpn-") and s.kind != "openvpn-tls-crypt" and not _present(d, s)[0] for s in items):
        _openssl()
    created, existing = [], []
    for s in items:  # CA first: needed() lists it before the certificates it signs
        if _present(d, s)[0]:
            existing += s.files
        else:
            created += _values(d, s, _generator(d, s))
    return Report(d, tuple(created), tuple(existing), notes)


def rotate(blueprint: str | Path, name: str, directory: Path | None = None) -> Report:
    """Replace one passphrase (old value kept as NAME.old), one TOTP secret (the same) or re-issue one
    OpenVPN client's certificate (old pair kept as *.old, the old certificate revoked and the CRL
    signed again)."""
    _, items = needed(blueprint)
    d = check_dir(directory or DEFAULT_DIR, create=False)
    by_name = {s.name: s for s in items}
    s = by_name.get(name)
    kinds = ("passphrase", "openvpn-client", "totp")
    rotatable = sorted(n for n, x in by_name.items() if x.kind in kinds)
    if s is None or s.kind not in kinds:
        raise _error("secrets-unknown", f"{name} is not a secret this blueprint needs that can be rotated",
                     hint="one of: " + ", ".join(rotatable))
    if not d.is_dir():
        raise _error("secrets-missing", f"{d} does not exist", hint=f"make it first: moat secrets init {blueprint}")
    with pki_rotation.locked(d):
        stopped = pki_rotation.pending(d)
        notes = _recover(d, items)
        if stopped is not None and stopped["secret"] == name:  # the rotation asked for, finished now
            return Report(d, tuple(s.files), (), notes)
        return _rotate(blueprint, d, s, by_name, notes)


def _rotate(blueprint: str | Path, d: Path, s: Secret, by_name: dict[str, Secret], notes: tuple[str, ...]) -> Report:
    missing = [f for f in s.files if not (d / f).exists()]
    if missing:
        raise _error("secrets-missing", f"{', '.join(str(d / f) for f in missing)} does not exist: nothing to rotate",
                     hint=f"create it with: moat secrets init {blueprint} --dir {d}")
    for f in s.files:  # a rotation stopped before it replaced anything kept an identical copy only
        old, current = d / (f + ".old"), d / f
        if old.exists() and old.read_bytes() == current.read_bytes():
            old.unlink()
    stale = [f + ".old" for f in s.files if (d / (f + ".old")).exists()]
    if stale:
        raise _error("secrets-rotate-pending", f"{', '.join(str(d / f) for f in stale)} exists: a previous rotation "
                     "is not finished",
                     hint="finish it (e.g. cryptsetup luksChangeKey on the machine), delete the .old file, run again")
    if s.kind == "openvpn-client":
        ca, crl = by_name["openvpn-ca"], by_name["openvpn-crl"]
        if not _present(d, ca)[0]:
            raise _error("secrets-missing", "the OpenVPN CA is missing: cannot issue a certificate",
                         hint=f"restore {d / OPENVPN_DIR}/ca.crt and ca.key")
        if not _present(d, crl)[0]:
            raise _error("secrets-missing", f"{', '.join(str(d / f) for f in crl.files if not (d / f).exists())} "
                         "does not exist: the old certificate could not be revoked",
                         hint=f"make the CRL first: moat secrets init {blueprint} --dir {d}")
        _openssl()
        # journaled: stopped anywhere, the next init or rotate finishes it (compiler/pki_rotation.py)
        old_serial = pki_rotation.begin(d, s.name, s.cn or s.name, (s.files[0], s.files[1]))
        created = list(s.files)
    else:  # the old value kept as NAME.old (a second name for it), then NAME replaced at once:
        # stopped anywhere, NAME holds the old value or the new one, never nothing
        values = _fresh(d, _generator(d, s))
        for rel, data in values.items():
            os.link(d / rel, d / (rel + ".old"))
            pki_rotation.kill_point("kept-old")
            pki_rotation.replace(d / rel, data)
        created = list(values)
    if s.kind == "passphrase":
        note = (f"the old value is in {d / s.files[0]}.old. "
                + LUKS_HINT.format(path=d / s.files[0], old=d / (s.files[0] + ".old"))
                + "; media written before this rotation still carry the old value (run moat iso again)")
    elif s.kind == "totp":
        how = ("install it as /home/{u}/.google_authenticator (0400, owned by {u}, restorecon) on the host, "
               "or reinstall from media made now (moat iso --secrets)" if s.machine == "host" else
               "on the VPS delete ~{u}/.google_authenticator, then run moat-install from an archive made now "
               "(moat vps-archive): it keeps an existing file with another secret")
        note = (f"new TOTP secret for {s.label}; the old one is {d / s.files[0]}.old. The phone must be enrolled "
                f"again: moat secrets totp {blueprint} {s.user} --machine {s.machine}. Until the new file is on the "
                f"{s.machine}, the old code is the one asked for: " + how.format(u=s.user)
                + f"; then delete {d / s.files[0]}.old")
    else:
        note = (f"new certificate and key for {s.cn}; the old ones are *.old. The old certificate (serial "
                f"{old_serial}) is revoked in {d / CRL_FILES[0]}, signed again: copy it to the VPS as "
                "/etc/openvpn/server/crl.pem (OpenVPN reads it at each new connection, no restart); until then "
                "the old certificate still connects. Install the new pair on that home host (/etc/openvpn/client/, "
                "or install it again from media made now with moat iso --secrets)")
    return Report(d, tuple(created), (), (*notes, note))


@attrs.frozen
class Status:
    secret: Secret
    file: str
    state: str           # present | missing | empty
    problem: str | None  # mode problem


def status(blueprint: str | Path, directory: Path | None = None) -> tuple[Path, list[Status], list[Diagnostic]]:
    """Every file of every secret the blueprint needs: present/missing/empty, and mode problems."""
    _, items = needed(blueprint)
    d = check_dir(directory or DEFAULT_DIR, create=False)
    rows = []
    for s in items:
        for f in s.files:
            p = d / f
            empty = p.exists() and p.stat().st_size == 0 and f not in MAY_BE_EMPTY
            state = "missing" if not p.exists() else ("empty" if empty else "present")
            rows.append(Status(s, f, state, mode_problem(p)))
    diags = _mode_errors(d, items) if d.exists() else []
    diags += [Diagnostic("secrets-empty", f"{d / r.file} is empty", hint="delete it and run moat secrets init")
              for r in rows if r.state == "empty"]
    return d, rows, diags
