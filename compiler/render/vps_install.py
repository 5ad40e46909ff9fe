"""VPS install script: `vps/moat-install`, which installs the VPS front (setup B) on a rented Debian 12.

The VPS cannot boot moat's install media, so its files travel in an archive (`moat vps-archive`,
compiler/vps_archive.py) that unpacks to

    moat-vps/moat-install            this script
    moat-vps/manifest.json           the bundle manifest's entries of vps/ (paths relative to moat-vps/)
    moat-vps/<path>                  every file of the bundle under vps/, at its path below vps/
    moat-vps/secrets/openvpn/...     the VPS's OpenVPN PKI files (SECRETS), from the secrets directory
    moat-vps/secrets/totp/vps/<user> with vps.sshd.totp: each VPS user's TOTP secret (totp_copies),
                                     the ~/.google_authenticator file `moat secrets init` made

and is run as `sudo moat-vps/moat-install`. Where each file goes is ONE table, FILES (like the
kickstart family's HOST_FILES): a glob under vps/ -> install path, mode, and the systemd unit that
reads it (restarted or reloaded when the file changes). Every vps/ file of the bundle must match
exactly one entry: a family that adds a file under vps/ without an entry here fails the build
(an assertion), so nothing reaches the archive that the script would leave uninstalled.

The script:
1. refuses to run unless root on Debian; checks every bundle file against the sha256 rendered
   into it (a changed file stops it before anything is installed), that the secrets are there,
   and that one of the users sshd will allow can log in (authorized_keys, plus
   ~/.google_authenticator with TOTP, or its TOTP secret in the archive): the new sshd_config
   must not lock everyone out.
2. apt-get installs the missing packages (none missing: apt is not run).
3. checks the new files with their tools before anything is installed: sshd -t, nft -c,
   fail2ban-client -t (on a copy of /etc/fail2ban with the new jail).
4. installs each file atomically (install -m into a temporary file beside it, then rename),
   skipping files already identical (content, mode, owner root): a second run changes nothing.
   With vps.sshd.totp, each user's TOTP secret from the archive becomes ~<user>/.google_authenticator
   (0400, owned by the user: what pam_google_authenticator demands) when the account exists (a
   missing account: a warning, nothing installed). An existing file with the same secret (first
   line) is left as it is (the module keeps its rate-limit and used-code state in the other
   lines); one with another secret is the user's own enrollment (google-authenticator run by
   hand): kept, with a warning saying how to use moat's instead. Never overwritten silently.
5. activates: nftables (the VPS ruleset is /etc/nftables.conf, which Debian's nftables.service
   loads; it creates, deletes and redefines only `table inet moat`, so a reload replaces that
   table and leaves others, e.g. fail2ban's, alone), openvpn-server@server, fail2ban, ssh
   (sshd -t first), apt-daily.timer and apt-daily-upgrade.timer (the daily security updates of
   the updates family's apt.conf.d files, by unattended-upgrades), then the certificates and haproxy (haproxy -c first): a certificate that
   cannot be had (DNS, port 80) stops the script with what to fix, everything else done. Each
   unit is enabled, and restarted/reloaded only when one of its files changed (started when not
   running). Without systemd running (a chroot, a container: no /run/systemd/system), units are
   only enabled and the script says what it would have started.
   Certificates: HAProxy needs a PEM per site before it serves it. For each site without one,
   `certbot certonly` with the moat-haproxy deploy hook (which writes the PEM): while no PEM
   exists (first run), HAProxy is stopped and certbot's standalone server answers on
   vps.address:80 itself; later (a site added), HAProxy runs and forwards the challenge to
   certbot on 127.0.0.1 (cli.ini). Renewals always go through HAProxy: certbot gives cli.ini's
   settings precedence over those saved at issue. MOAT_ACME_SERVER=URL: certbot's --server, for a
   staging CA (the tests use pebble, Debian's ACME test server).
MOAT_ROOT=DIR (staging): steps 1 (sha256 and secrets only) and 4 under DIR, nothing else: no
apt, no systemctl, no certbot, no tool checks, no root needed (owner root only when run as root).

Validator: shellcheck (all severities) on the generated script.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from typing import Iterator

import attrs

from ..derive import Plan, _users
from ..media.layout import totp_file
from ..model import User
from ..verify import Validator
from . import Output, template
from .updates import APT_PACKAGE as UPDATES_PACKAGE
from .vps import CERT_DIR, SERVER_DIR, routes

AFTER = ("updates", "vps", "vps_login")

SCRIPT = "vps/moat-install"
PREFIX = "vps/"
SECRETS_DIR = "secrets"  # beside the script in the archive, laid out as the secrets directory

VALIDATORS = (
    Validator(SCRIPT, ("shellcheck", "{file}"), "shellcheck"),
)

OPENVPN_UNIT = "openvpn-server@server"  # Debian's unit for /etc/openvpn/server/server.conf
HOOK = "/etc/letsencrypt/renewal-hooks/deploy/moat-haproxy"
LIVE_DIR = "/etc/letsencrypt/live"


@attrs.frozen
class Install:
    """Bundle files matching `pattern` (a glob below vps/) are installed at `dest` (a directory
    when it ends with '/': the file keeps its name) with `mode`; `unit` reads them."""

    pattern: str
    dest: str
    mode: str
    unit: str | None


FILES = (
    Install("haproxy/haproxy.cfg", "/etc/haproxy/haproxy.cfg", "0644", "haproxy"),
    Install("letsencrypt/cli.ini", "/etc/letsencrypt/cli.ini", "0644", None),
    Install("letsencrypt/renewal-hooks/deploy/moat-haproxy", HOOK, "0755", None),
    Install("openvpn/server.conf", f"{SERVER_DIR}/server.conf", "0644", OPENVPN_UNIT),
    # read by OpenVPN at each connection, after it dropped to nobody: world-readable
    Install("openvpn/ccd/*", f"{SERVER_DIR}/ccd/", "0644", OPENVPN_UNIT),
    Install("nftables/moat.nft", "/etc/nftables.conf", "0600", "nftables"),
    Install("ssh/sshd_config", "/etc/ssh/sshd_config", "0600", "ssh"),
    Install("pam.d/sshd", "/etc/pam.d/sshd", "0644", None),
    Install("fail2ban/jail.d/*.conf", "/etc/fail2ban/jail.d/", "0644", "fail2ban"),
    # apt reads them at each run of its daily jobs: the timers that start those are enabled (and
    # started), no service reloads them
    Install("apt/apt.conf.d/*-auto-upgrades", "/etc/apt/apt.conf.d/", "0644", "apt-daily.timer"),
    Install("apt/apt.conf.d/*-unattended-upgrades", "/etc/apt/apt.conf.d/", "0644", "apt-daily-upgrade.timer"),
)

# the VPS's OpenVPN files from the secrets directory (compiler/secrets.py), never ca.key or a
# client's key. crl.pem is read at each connection by the dropped-privilege server.
SECRETS = (
    Install("openvpn/ca.crt", f"{SERVER_DIR}/ca.crt", "0644", OPENVPN_UNIT),
    Install("openvpn/server.crt", f"{SERVER_DIR}/server.crt", "0644", OPENVPN_UNIT),
    Install("openvpn/server.key", f"{SERVER_DIR}/server.key", "0600", OPENVPN_UNIT),
    Install("openvpn/tls-crypt.key", f"{SERVER_DIR}/tls-crypt.key", "0600", OPENVPN_UNIT),
    Install("openvpn/crl.pem", f"{SERVER_DIR}/crl.pem", "0644", OPENVPN_UNIT),
)

# units in activation order, and how a changed file is applied. HAProxy is last: its certificates
# need Let's Encrypt to reach the VPS (DNS, port 80), the one step that can fail outside the VPS;
# the firewall, the VPN, fail2ban and sshd are in place before it.
UNITS = (
    ("nftables", "reload-or-restart"),
    (OPENVPN_UNIT, "restart"),
    ("fail2ban", "reload-or-restart"),
    ("ssh", "reload-or-restart"),
    # security updates (updates family): package lists, then unattended-upgrade, daily
    ("apt-daily.timer", "restart"),
    ("apt-daily-upgrade.timer", "restart"),
    ("haproxy", "reload-or-restart"),
)
PACKAGES = ("openssh-server", "nftables", "openvpn", "haproxy", "certbot")


@attrs.frozen
class Copy:
    """One file the script installs: `source` relative to the script's directory."""

    source: str
    dest: str
    mode: str
    unit: str
    sha256: str | None = None


def copies(bundle: dict[str, Output]) -> list[Copy]:
    """The bundle's vps/ files (but the script) in FILES order, each matched by exactly one entry."""
    paths = sorted(p for p in bundle if p.startswith(PREFIX) and p != SCRIPT)
    matched: dict[str, list[Install]] = {p: [] for p in paths}
    found = []
    for entry in FILES:
        head = entry.pattern.split("*", 1)[0]
        fixed = head[:head.rfind("/") + 1]
        for path in paths:
            rel = path[len(PREFIX):]
            if not fnmatch.fnmatchcase(rel, entry.pattern):
                continue
            matched[path].append(entry)
            dest = entry.dest + rel[len(fixed):] if entry.dest.endswith("/") else entry.dest
            found.append(Copy(rel, dest, entry.mode, entry.unit or "", hashlib.sha256(bundle[path].content).hexdigest()))
    unmatched = [p for p, e in matched.items() if not e]
    assert not unmatched, (f"bundle files under {PREFIX} that {SCRIPT} would not install: {', '.join(unmatched)}; "
                           "add an entry to compiler/render/vps_install.py FILES")
    twice = [p for p, e in matched.items() if len(e) > 1]
    assert not twice, f"bundle files matched by more than one entry of vps_install.FILES: {', '.join(twice)}"
    dests = [c.dest for c in found]
    assert len(set(dests)) == len(dests), f"two bundle files installed at the same path: {dests}"
    return found


TOTP_FILE = ".google_authenticator"  # in the user's home: pam_google_authenticator's default secret=
TOTP_MODE = "0400"                   # what google-authenticator writes; the module accepts 0400 or 0600


@attrs.frozen
class TotpCopy:
    """A VPS user's TOTP secret: `source` relative to the script's directory, `user` (the blueprint's)."""

    source: str
    user: User
    secret: str  # its file in the secrets directory (totp/vps/<user>)


def totp_copies(plan: Plan) -> list[TotpCopy]:
    """Each VPS user's TOTP secret (vps.sshd.totp), as `moat secrets init` makes them."""
    vps = plan.blueprint.vps
    if vps is None or not vps.sshd.totp:
        return []
    files = [(u, totp_file("vps", u.name)) for u in _users(plan.blueprint.users, vps.users)]
    return [TotpCopy(f"{SECRETS_DIR}/{file}", user, file) for user, file in files]


def secret_copies() -> list[Copy]:
    return [Copy(f"{SECRETS_DIR}/{s.pattern}", s.dest, s.mode, s.unit or "") for s in SECRETS]


def _referenced(conf: str, directory: str) -> set[str]:
    """Files under `directory` that the options of an OpenVPN config name (not comments, not the
    client-config-dir directory)."""
    found = re.findall(r"^[ \t]*([a-z][a-z0-9-]*)[ \t]+(" + re.escape(directory) + r"/[^\s\"']+)", conf, re.MULTILINE)
    return {path for option, path in found if option != "client-config-dir"}


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    vps = plan.blueprint.vps
    if vps is None:
        return
    files = copies(bundle)
    secrets = secret_copies()
    installed = {c.dest for c in files + secrets}
    server = bundle.get(PREFIX + "openvpn/server.conf")
    if server is not None:
        missing = sorted(_referenced(server.content.decode(), SERVER_DIR) - installed)
        assert not missing, f"server.conf reads {missing}, which {SCRIPT} does not install (vps_install.SECRETS)"
    rels = {c.source for c in files}
    sshd = "ssh/sshd_config" in rels
    totp = "pam.d/sshd" in rels
    jails = [c for c in files if c.source.startswith("fail2ban/")]
    haproxy = "haproxy/haproxy.cfg" in rels
    users = _users(plan.blueprint.users, vps.users)
    totp_files = totp_copies(plan) if totp else []
    if sshd:
        allowed = re.findall(r"^AllowUsers\s+(.*)$", bundle[PREFIX + "ssh/sshd_config"].content.decode(), re.MULTILINE)
        assert allowed and allowed[0].split() == [u.name for u in users], \
            f"vps/ssh/sshd_config allows {allowed}, {SCRIPT} checks {[u.name for u in users]}"
    packages = list(PACKAGES)
    if jails:
        packages.append("fail2ban")
        if any(re.search(r"^backend\s*=\s*systemd", bundle[PREFIX + j.source].content.decode(), re.MULTILINE)
               for j in jails):
            packages.append("python3-systemd")  # fail2ban's journal backend
    if totp:
        packages.append("libpam-google-authenticator")
    if any(c.source.startswith("apt/") for c in files):
        packages.append(UPDATES_PACKAGE)
    units = [(u, a) for u, a in UNITS if any(c.unit == u for c in files + secrets)]
    yield template(SCRIPT, "vps_install/moat-install.sh.j2", mode=0o555, vps=vps, files=files, secrets=secrets,
                   packages=packages, units=units, routes=routes(plan) if haproxy else [], users=users,
                   sshd=sshd, totp=totp, totp_files=totp_files, totp_file=TOTP_FILE, totp_mode=TOTP_MODE,
                   jails=jails, haproxy=haproxy, nft="nftables/moat.nft" in rels,
                   cert_dir=CERT_DIR, hook=HOOK, live_dir=LIVE_DIR, secrets_dir=SECRETS_DIR)
