"""The OpenVPN PKI's openssl steps: a CA, certificates it signs, the CRL and its database.

Pure functions of their inputs, run in a scratch directory the caller owns (compiler/secrets.py
for init, compiler/pki_rotation.py for a journaled rotation); nothing here writes the secrets
directory. Imports nothing of moat's but the diagnostics and the medium's layout.
"""

from __future__ import annotations

import os
import re
import secrets as _random
import shutil
import signal
import subprocess
from pathlib import Path

from .diagnostics import Diagnostic, MoatError
from .media.layout import OPENVPN_DIR

EC_CURVE = "prime256v1"        # P-256: accepted by every OpenVPN 2.4+ and OpenSSL build
CA_DAYS = 3650
LEAF_DAYS = 1095
CRL_DAYS = CA_DAYS             # OpenVPN refuses every client once the CRL's nextUpdate has passed
CRL_REASON = "superseded"      # a rotation replaces the certificate
CRL_FILES = (f"{OPENVPN_DIR}/crl.pem", f"{OPENVPN_DIR}/index.txt", f"{OPENVPN_DIR}/crlnumber")


def _error(rule: str, message: str, hint: str | None = None) -> MoatError:
    return MoatError([Diagnostic(rule, message, hint=hint)])


def kill_point(step: str) -> None:
    """SIGKILL this process at `step` when MOAT_TEST_KILL_AT names it (tests only)."""
    if os.environ.get("MOAT_TEST_KILL_AT") == step:
        os.kill(os.getpid(), signal.SIGKILL)


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
    kill_point("leaf")  # a private key in the scratch directory
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


# `openssl ca` only keeps the CRL here: certificates are issued by `openssl x509` (make_leaf), and
# the database (index.txt) lists the revoked ones. Paths are relative to the scratch directory.
CA_CONFIG = """\
[ ca ]
default_ca = moat
[ moat ]
database = index.txt
crlnumber = crlnumber
default_md = sha256
default_crl_days = {days}
unique_subject = no
crl_extensions = crl_ext
[ crl_ext ]
authorityKeyIdentifier = keyid:always
"""


def sign_crl(work: Path, ca_crt: Path, ca_key: Path, index: bytes = b"", number: bytes = b"01\n",
             revoke: tuple[Path, ...] = ()) -> tuple[bytes, bytes, bytes]:
    """Revoke the certificates `revoke` (reason CRL_REASON) in the database `index` and sign a
    new CRL valid for CRL_DAYS: (crl.pem, index.txt, crlnumber), in CRL_FILES order."""
    openssl = _openssl()
    (work / "ca.cnf").write_text(CA_CONFIG.format(days=CRL_DAYS))
    (work / "index.txt").write_bytes(index)
    (work / "crlnumber").write_bytes(number)
    common = ["-config", "ca.cnf", "-cert", str(ca_crt), "-keyfile", str(ca_key), "-batch"]
    for crt in revoke:
        _run([openssl, "ca", "-revoke", str(crt), "-crl_reason", CRL_REASON, *common], work)
    _run([openssl, "ca", "-gencrl", "-crldays", str(CRL_DAYS), "-out", "crl.pem", *common], work)
    return (work / "crl.pem").read_bytes(), (work / "index.txt").read_bytes(), (work / "crlnumber").read_bytes()


def serial(crt: Path) -> str:
    """The serial number of a certificate file, upper-case hex (as `openssl x509 -serial` says)."""
    result = subprocess.run([_openssl(), "x509", "-in", str(crt), "-noout", "-serial"], capture_output=True, text=True)
    if result.returncode != 0:
        raise _error("secrets-tool-failed", f"openssl x509 cannot read {crt}: {result.stderr.strip()}",
                     hint="restore the certificate, or move it away and run init again")
    return result.stdout.strip().split("=", 1)[1]
