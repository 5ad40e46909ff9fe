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

The directory and its subdirectories are 0700, every file 0600. Nothing is ever overwritten:
`init` creates what is missing; `rotate` moves the current value to NAME.old first. The PKI is
made with the `openssl` command; the tls-crypt key with `openvpn --genkey secret` when openvpn
is installed, else written here in the same format.
"""

from __future__ import annotations

import os
import re
import secrets as _random
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import attrs

from .diagnostics import Diagnostic, MoatError

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / "secrets" if (REPO / "Makefile").exists() else Path("secrets")

PASSPHRASE_CHARS = 32          # secrets.token_urlsafe(24) is exactly 32 characters
OPENVPN_DIR = "openvpn"
CLIENTS_DIR = "openvpn/clients"
CA_DAYS = 3650
LEAF_DAYS = 1095
EC_CURVE = "prime256v1"        # P-256: accepted by every OpenVPN 2.4+ and OpenSSL build
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
    kind: str            # passphrase | openvpn-ca | openvpn-server | openvpn-client | openvpn-tls-crypt
    files: tuple[str, ...]
    cn: str | None = None  # certificate common name


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
    from .iso import secrets_read_by
    from .pipeline import check_file
    from .render.kickstart import vm_luks_secret
    from .render.luks import encrypted_volumes

    compiled = check_file(blueprint)
    plan = compiled.plan
    names = set(_references(compiled.source.data))
    for output in compiled.files.values():
        names.update(secrets_read_by(output.content))
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
        out.append(Secret("openvpn-tls-crypt", "openvpn-tls-crypt", (f"{OPENVPN_DIR}/tls-crypt.key",)))
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
    """Why `path`'s mode is unsafe (group/other bits set), else None."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    bits = stat.S_IMODE(st.st_mode)
    if bits & 0o077:
        want = "700" if stat.S_ISDIR(st.st_mode) else "600"
        return f"mode {bits:04o} lets group/others in (want {want})"
    return None


def _mode_errors(d: Path, items: list[Secret]) -> list[Diagnostic]:
    paths = [d] + [d / sub for sub in (OPENVPN_DIR, CLIENTS_DIR) if (d / sub).exists()]
    paths += [d / f for s in items for f in s.files]
    diags = []
    for p in paths:
        why = mode_problem(p)
        if why:
            fix = f"chmod {'700' if p.is_dir() else '600'} {p}"
            diags.append(Diagnostic("secrets-mode", f"{p}: {why}", hint=fix))
    return diags


def _mkdirs(d: Path, rel: str) -> None:
    p = d
    for part in Path(rel).parent.parts:
        p = p / part
        if not p.exists():
            p.mkdir(mode=0o700)
            os.chmod(p, 0o700)


def _write_new(path: Path, data: bytes) -> None:
    """Create `path` 0600 with `data`; never replaces an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def passphrase() -> bytes:
    value = _random.token_urlsafe(24)
    assert len(value) == PASSPHRASE_CHARS
    return (value + "\n").encode()


# --- PKI -------------------------------------------------------------------------------------

def _openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise _error("secrets-openssl-missing", "the openssl command is needed to make the OpenVPN PKI",
                     hint="apt-get install openssl")
    return found


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                            preexec_fn=lambda: os.umask(0o077))
    if result.returncode != 0:
        raise _error("secrets-tool-failed", f"{' '.join(cmd[:3])} failed: {(result.stderr or result.stdout).strip()}",
                     hint="the secrets directory is unchanged; fix the tool and run again")


def _ec_key_args() -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{EC_CURVE}", "-nodes"]


def _subject(cn: str) -> str:
    return "/CN=" + re.sub(r"([/=+,\\])", r"\\\1", cn)


def make_ca(work: Path, cn: str) -> tuple[bytes, bytes]:
    _run([_openssl(), "req", "-x509", *_ec_key_args(), "-sha256", "-days", str(CA_DAYS), "-subj", _subject(cn),
          "-keyout", "ca.key", "-out", "ca.crt",
          "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign",
          "-addext", "subjectKeyIdentifier=hash"], work)
    return (work / "ca.crt").read_bytes(), (work / "ca.key").read_bytes()


def make_leaf(work: Path, ca_crt: Path, ca_key: Path, cn: str, usage: str) -> tuple[bytes, bytes]:
    """A certificate for `cn` signed by the CA, with extendedKeyUsage `usage` (serverAuth/clientAuth)."""
    openssl = _openssl()
    _run([openssl, "req", "-new", *_ec_key_args(), "-subj", _subject(cn), "-keyout", "leaf.key", "-out", "leaf.csr"],
         work)
    (work / "leaf.ext").write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                   f"extendedKeyUsage={usage}\nsubjectKeyIdentifier=hash\n"
                                   "authorityKeyIdentifier=keyid\n")
    serial = "0x" + _random.token_hex(16)
    _run([openssl, "x509", "-req", "-sha256", "-in", "leaf.csr", "-CA", str(ca_crt), "-CAkey", str(ca_key),
          "-set_serial", serial, "-days", str(LEAF_DAYS), "-extfile", "leaf.ext", "-out", "leaf.crt"], work)
    data = (work / "leaf.crt").read_bytes(), (work / "leaf.key").read_bytes()
    for f in ("leaf.crt", "leaf.key", "leaf.csr", "leaf.ext"):
        (work / f).unlink()
    return data


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


def _values(d: Path, s: Secret, generate: Callable[[Path], dict[str, bytes]]) -> list[str]:
    """Generate the files of `s` in a private scratch dir inside `d`, then create each one."""
    with tempfile.TemporaryDirectory(dir=d, prefix=".moat-secrets.") as tmp:
        os.chmod(tmp, 0o700)
        values = generate(Path(tmp))
    for rel, data in values.items():
        _mkdirs(d, rel)
        _write_new(d / rel, data)
    return list(values)


def _generator(d: Path, s: Secret) -> Callable[[Path], dict[str, bytes]]:
    ca_crt, ca_key = d / OPENVPN_DIR / "ca.crt", d / OPENVPN_DIR / "ca.key"
    if s.kind == "passphrase":
        return lambda work: {s.files[0]: passphrase()}
    if s.kind == "openvpn-ca":
        return lambda work: dict(zip(s.files, make_ca(work, s.cn or "moat OpenVPN CA")))
    if s.kind == "openvpn-tls-crypt":
        return lambda work: {s.files[0]: make_tls_crypt(work)}
    usage = "serverAuth" if s.kind == "openvpn-server" else "clientAuth"
    return lambda work: dict(zip(s.files, make_leaf(work, ca_crt, ca_key, s.cn or s.name, usage)))


def init(blueprint: str | Path, directory: Path | None = None) -> Report:
    """Create every secret the blueprint needs that is missing; never changes an existing one."""
    _, items = needed(blueprint)
    d = check_dir(directory or DEFAULT_DIR, create=True)
    problems = _mode_errors(d, items)
    for s in items:
        full, some = _present(d, s)
        if some and not full:
            missing = [f for f in s.files if not (d / f).exists()]
            problems.append(Diagnostic("secrets-incomplete", f"{s.name}: {', '.join(str(d / f) for f in missing)} "
                                       f"missing while the rest of {s.name} exists",
                                       hint=f"restore it, or move the rest of {s.name} away and run init again"))
    ca = next((s for s in items if s.kind == "openvpn-ca"), None)
    if ca is not None and not _present(d, ca)[0]:
        issued = [s.name for s in items if s.kind in ("openvpn-server", "openvpn-client") and _present(d, s)[1]]
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
    return Report(d, tuple(created), tuple(existing))


def rotate(blueprint: str | Path, name: str, directory: Path | None = None) -> Report:
    """Replace one passphrase (old value kept as NAME.old) or re-issue one OpenVPN client's certificate."""
    _, items = needed(blueprint)
    d = check_dir(directory or DEFAULT_DIR, create=False)
    by_name = {s.name: s for s in items}
    s = by_name.get(name)
    rotatable = sorted(n for n, x in by_name.items() if x.kind in ("passphrase", "openvpn-client"))
    if s is None or s.kind not in ("passphrase", "openvpn-client"):
        raise _error("secrets-unknown", f"{name} is not a secret this blueprint needs that can be rotated",
                     hint="one of: " + ", ".join(rotatable))
    if not d.is_dir():
        raise _error("secrets-missing", f"{d} does not exist", hint=f"make it first: moat secrets init {blueprint}")
    problems = _mode_errors(d, items)
    if problems:
        raise MoatError(problems)
    missing = [f for f in s.files if not (d / f).exists()]
    if missing:
        raise _error("secrets-missing", f"{', '.join(str(d / f) for f in missing)} does not exist: nothing to rotate",
                     hint=f"create it with: moat secrets init {blueprint} --dir {d}")
    stale = [f + ".old" for f in s.files if (d / (f + ".old")).exists()]
    if stale:
        raise _error("secrets-rotate-pending", f"{', '.join(str(d / f) for f in stale)} exists: a previous rotation "
                     "is not finished",
                     hint="finish it (e.g. cryptsetup luksChangeKey on the machine), delete the .old file, run again")
    if s.kind == "openvpn-client":
        ca = by_name["openvpn-ca"]
        if not _present(d, ca)[0]:
            raise _error("secrets-missing", "the OpenVPN CA is missing: cannot issue a certificate",
                         hint=f"restore {d / OPENVPN_DIR}/ca.crt and ca.key")
        _openssl()
    for f in s.files:
        os.rename(d / f, d / (f + ".old"))
    try:
        created = _values(d, s, _generator(d, s))
    except BaseException:
        for f in s.files:
            (d / f).unlink(missing_ok=True)
            os.rename(d / (f + ".old"), d / f)
        raise
    if s.kind == "passphrase":
        note = (f"the old value is in {d / s.files[0]}.old. "
                + LUKS_HINT.format(path=d / s.files[0], old=d / (s.files[0] + ".old"))
                + "; media written before this rotation still carry the old value (run moat iso again)")
    else:
        note = (f"new certificate and key for {s.cn}; the old ones are *.old. Install the new pair on that home "
                "host (/etc/openvpn/client/). The old certificate stays valid until it expires "
                "(the server has no CRL): treat a lost key as a reason to re-issue the whole PKI")
    return Report(d, tuple(created), (), (note,))


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
            state = "missing" if not p.exists() else ("empty" if p.stat().st_size == 0 else "present")
            rows.append(Status(s, f, state, mode_problem(p)))
    diags = _mode_errors(d, items) if d.exists() else []
    diags += [Diagnostic("secrets-empty", f"{d / r.file} is empty", hint="delete it and run moat secrets init")
              for r in rows if r.state == "empty"]
    return d, rows, diags
