"""Kickstart files: the host (Rocky/Alma 9) and every VM installed with `install.method: kickstart`.

`host/kickstart/ks.cfg` installs the host unattended: static network on the uplink, the
host's users with their SSH keys and no password (root locked), SELinux as the blueprint
says, firewalld with only the sshd port until the firewall family's zone is installed,
the disk layout of host.disk, the KVM/libvirt packages, and in %post the host's files from
the other families (HOST_FILES, one table) copied from the install medium.
`vms/<vm>/kickstart/ks.cfg` does the same for a VM (VM_FILES): static address from its NIC
(the DHCP lease), OS disk vda only. Its data disks are left to the luks family's script, which
%post runs from the installer (MOAT_LUKS_ROOT=the new system) with the initial passphrase
moat/secrets/<vm>-luks from the medium (vm_luks_secret: the blueprint has no field for it).

The install medium
------------------
Anaconda reads ks.cfg itself (from a volume labelled OEMDRV, or `inst.ks=`). The medium also
carries, next to it:
    moat/bundle/...         the bundle (store directory) this kickstart belongs to
    moat/secrets/<NAME>     the value of each secret reference `secret:NAME` (first line)
%pre looks for `moat/bundle/manifest.json` in MEDIUM_CANDIDATES (the directory where the
installer's own dracut stage mounts the DVD it booted from: a remastered install DVD) and on
the volume labelled MEDIUM_LABEL (OEMDRV; Anaconda's dracut reads ks.cfg from it and
unmounts it again, so %pre mounts it read-only at MEDIUM_MOUNT): the DVD first for the host,
the OEMDRV seed first for a VM (HOST_/VM_MEDIUM_SEARCH). The search list and the mount point
are shell variables at the top of %pre: the media step may change them. The directory found is passed on to %post
in /tmp/moat-medium. Every file %post copies is checked against the sha256 this kickstart
carries (rendered from the bundle), so a medium with other files fails the install.

Secrets and disk encryption
---------------------------
With host.disk.encryption, root and swap sit in LVM on a LUKS2 partition (pv.01), opened
in the initramfs with the passphrase; the passphrase is never in the bundle. %pre reads it
from moat/secrets/<NAME> on the medium and writes the two encrypted `part` lines into
/tmp/moat-luks-parts.ks, which the disk layout includes with `%include` (the only way to
give Anaconda a passphrase without writing it in ks.cfg). %post removes that file and
scrubs `--passphrase` from the kickstart copies Anaconda leaves in /root.

The second PV (pv.02, the rest of the disk) holds host.disk.volume_group, the VM disks. It is
encrypted too: the luks family keeps each VM's data-disk keyfile on that VM's OS disk, which
lives in this volume group; a plain volume group would hand anyone holding the disk both the
keyfile and the data. pv.02 opens at boot with a 4 KiB keyfile (/etc/moat/luks/<vg>.key,
0400) stored on the encrypted root, added by %post with the passphrase: one passphrase,
typed once in the initramfs, opens everything. The same passphrase stays in a key slot of
pv.02 for recovery.

Remote unlock: dracut-sshd (EPEL) runs OpenSSH in the initramfs on
host.disk.encryption.unlock_port for the keys of the host's sudo users (/etc/dracut-sshd/
authorized_keys), with a dedicated Ed25519 host key (the initramfs on /boot is not encrypted:
the host's own key stays off it). The port is given twice, as every version reads one of the
two: SSHD_OPTS="-p PORT" in /etc/sysconfig/dracut-sshd, and /etc/dracut-sshd/sshd_config
(0.7.1 and later; keys only, the sshd family's algorithms). Root gets the password field '*'
instead of Anaconda's '!' lock: both mean no password, but sshd without PAM (the initramfs)
refuses keys for a '!'-locked account. The initramfs network comes from the kernel command
line (bootloader --append "rd.neednet=1 ip=..."); unlock with `systemd-tty-ask-password-agent`.
Without any sudo user on the host there is no remote unlock: the console asks.

The VMs' seeds: `moat iso` writes one ISO per VM (compiler/seeds.py: <vm>-cidata.iso for
cloud-init, <vm>-oemdrv.iso for a kickstart) onto the host's medium under moat/seeds/, with
moat/seeds/SHA256SUMS. They are made after the bundle (they carry secret values the bundle
never holds), so this kickstart cannot carry their sha256 as it does for bundle files; %post
checks each seed against SHA256SUMS instead (a seed changed or damaged after `moat iso`, or
missing, fails the install) and copies it into the pool ISOs, the pool the domains take it
from: 0644 root, or 0600 when its VM's user-data or kickstart reads secrets (0400 on the
medium). The seeds are reproducible (same files and secrets, same bytes),
so running `moat iso` again and comparing SHA256SUMS shows that a medium's seeds are the
ones its inputs make. The pool's directory is labelled virt_content_t (semanage fcontext, so
a relabel keeps it), what libvirt gives read-only VM media.

The golden images (host/images.json of the bundle, rendered before this family): `moat iso` puts
each on the host's medium as moat/images/NAME-KEY.qcow2 with moat/images/SHA256SUMS; %post copies
every one the bundle lists to /var/lib/moat/images (0700; each 0600 root) under a temporary name,
checks the copy against SHA256SUMS and only then renames it, so moat-libvirt-apply, which makes
the VMs' OS volumes from them at the first boot, never sees a partial or foreign image.

Security updates (blueprint host.updates, the updates family): dnf-automatic is installed, its
automatic.conf copied to /etc/dnf/ and dnf-automatic.timer enabled.

The home host's OpenVPN client (only with `vps`): the vps family's host/openvpn/client.conf is
installed as /etc/openvpn/client/<vps.client>.conf and openvpn-client@<vps.client>.service
enabled. Its key material is not in the bundle: %post copies, from the medium's
moat/secrets/openvpn/..., exactly the four files client.conf names (ca, cert, key, tls-crypt:
the CA certificate, this client's certificate and key, the tls-crypt key) to the paths it names,
0600 root. `moat iso --secrets DIR` puts exactly those on the medium (the names this kickstart
mentions): never the CA key, the server's key or another client's key. %pre checks they are on
the medium before the disk is touched.

TOTP (host.sshd.totp): sshd asks every user for a code after the key, and pam_google_authenticator
refuses a user without ~/.google_authenticator (no nullok): an unattended install would lock
everyone out. `moat secrets init` makes each host user's secret (secrets directory
totp/host/<user>, the file pam_google_authenticator reads); the medium carries it as
moat/secrets/totp/host/<user> (only the host users': never the VPS users' secrets). %pre checks
they are all there before the disk is touched; %post installs each as
/home/<user>/.google_authenticator (Anaconda's `user` home), 0400, then the chroot %post gives it
to the user (chown USER:, where the user exists) and restorecon labels it (auth_home_t in the
targeted policy). Users enroll their phone with `moat secrets totp BLUEPRINT USER`.

Packages from outside BaseOS/AppStream come from repos named in the kickstart (`repo`):
EPEL (dracut-sshd; openvpn for the tunnel to the VPS; fail2ban and google-authenticator when
the sshd family asks for them) and Wazuh (wazuh-agent when the host is a Wazuh agent). The installed system gets their repo files
with GPG checks on (epel-release; /etc/yum.repos.d/wazuh.repo); during the install itself,
signatures are checked only as far as Anaconda's DNF does (`repo` has no gpgkey option). libvirt runs as the modular
daemons RHEL 9 defaults to (virtqemud, virtnetworkd, virtstoraged), not the deprecated libvirtd.

Other decisions: UEFI only (/boot/efi from host.disk.efi); root VG "system" ("system0" if
host.disk.volume_group is "system"); no host.uplink.dns means the gateway resolves (the
installer needs names for its repositories); sudo users get passwordless sudo (they have no
password); a non-22 sshd port is labelled ssh_port_t for SELinux; `reboot --eject`, so the
machine does not boot the installer again; the Wazuh repo stays disabled after the install
(an agent newer than the manager is refused: upgrade it on purpose).

Validator: ksvalidator -v RHEL9 (pykickstart, from the venv moat runs in), then bash -n and
shellcheck on every %pre/%post script (compiler/verify_tools/kickstart.sh).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

import attrs

from ..derive import Plan, ResolvedNetwork, ResolvedNic, ResolvedVm
from ..diagnostics import Path as BlueprintPath
from ..media.layout import (CLIENTS_DIR, HOST_IMAGES, HOST_IMAGES_DIR, IMAGES_DIR, MEDIUM_BUNDLE, MEDIUM_LABEL,
                            MEDIUM_SECRETS, OPENVPN_DIR, SEED_DIR, SUMS, secret_name, secrets_read_by, totp_file,
                            vm_luks_secret)
from ..model import Nic, User
from ..seeds import SECRET_SEED_MODE, SEED_MODE, SELINUX_TYPE, seed_of, seed_pool, selinux_spec
from ..verify import Validator
from . import Output, template
from . import wazuh as wazuh_family
from .images import HOST_STATE_DIR

RENDER_DIR = Path(__file__).resolve().parent
TOOLS = RENDER_DIR.parent / "verify_tools"

# --- the install medium (see the module docstring; its layout is compiler/media/layout.py) ----
MEDIUM_CANDIDATES = ("/run/install/repo",)
MEDIUM_MOUNT = "/run/moat-medium"
# where %pre looks, in order: the host's kickstart sits on its (remastered) install DVD, a VM's
# on its own OEMDRV seed, which also carries that VM's secrets
HOST_MEDIUM_SEARCH = (*MEDIUM_CANDIDATES, f"LABEL={MEDIUM_LABEL}")
VM_MEDIUM_SEARCH = (f"LABEL={MEDIUM_LABEL}", *MEDIUM_CANDIDATES)
LUKS_INCLUDE = "/tmp/moat-luks-parts.ks"


# --- where bundle files go on the installed machine ---------------------------------------


@attrs.frozen
class Install:
    """Bundle files matching `pattern` (relative to host/ or vms/<vm>/) are installed at `dest`
    (a directory when it ends with '/': the file keeps its name) with `mode` and `owner`.
    `family` is the render family that makes them (this family renders after it); `enable`
    enables the installed systemd unit."""

    pattern: str
    dest: str
    mode: str
    family: str
    owner: str = "root:root"
    enable: bool = False


def _luks_install_path() -> str:
    try:
        from .luks import INSTALL_PATH
    except ImportError:
        return "/usr/local/sbin/moat-luks-provision"
    return INSTALL_PATH


LIBVIRT_DEFINITIONS = "/etc/moat/libvirt/"  # the host's libvirt XML, defined at boot by moat-libvirt-apply
OPENVPN_CLIENT_DIR = "/etc/openvpn/client/"  # Rocky/Alma 9's openvpn package: openvpn-client@NAME reads NAME.conf here
OPENVPN_CLIENT_CONF = "openvpn/client.conf"  # under host/ in the bundle (vps family)
OPENVPN_CLIENT_UNIT = "openvpn-client@{client}.service"
SECRET_MODE = "0600"                         # key material from the medium: root only
TOTP_HOME = "/home/{user}/.google_authenticator"  # pam_google_authenticator's default secret= path
TOTP_MODE = "0400"                           # what google-authenticator writes; the module accepts 0400/0600

HOST_FILES = (
    Install("ssh/sshd_config", "/etc/ssh/sshd_config", "0600", "sshd"),
    Install("pam.d/sshd", "/etc/pam.d/sshd", "0644", "sshd"),
    Install("fail2ban/jail.d/*.conf", "/etc/fail2ban/jail.d/", "0644", "sshd"),
    Install("firewalld/firewalld.conf", "/etc/firewalld/firewalld.conf", "0644", "firewall"),
    Install("firewalld/zones/*.xml", "/etc/firewalld/zones/", "0644", "firewall"),
    Install("firewalld/policies/*.xml", "/etc/firewalld/policies/", "0644", "firewall"),  # outbound (egress)
    # the same policy for a host without firewalld: installed, not loaded
    Install("nftables/*.nft", "/etc/nftables/", "0600", "firewall"),
    Install("libvirt/hooks/qemu", "/etc/libvirt/hooks/qemu", "0555", "hooks"),
    Install("mirror/moat-mirror", "/usr/local/libexec/moat/moat-mirror", "0555", "mirror"),
    Install("libvirt/moat-libvirt-apply", "/usr/local/libexec/moat/moat-libvirt-apply", "0555", "libvirt"),
    Install("systemd/*.service", "/etc/systemd/system/", "0644", "mirror", enable=True),
    Install("NetworkManager/system-connections/*.nmconnection", "/etc/NetworkManager/system-connections/", "0600",
            "mirror"),
    Install("wazuh/ossec.conf", wazuh_family.INSTALL_PATH, wazuh_family.INSTALL_MODE, "wazuh",
            wazuh_family.INSTALL_OWNER),
    Install("libvirt/networks/*.xml", LIBVIRT_DEFINITIONS + "networks/", "0644", "libvirt"),
    Install("libvirt/pools/*.xml", LIBVIRT_DEFINITIONS + "pools/", "0644", "libvirt"),
    Install("libvirt/volumes/*/*.xml", LIBVIRT_DEFINITIONS + "volumes/", "0644", "libvirt"),
    Install("libvirt/domains/*.xml", LIBVIRT_DEFINITIONS + "domains/", "0644", "libvirt"),
    # {client}: blueprint vps.client; the unit openvpn-client@{client}.service reads it
    Install("openvpn/client.conf", OPENVPN_CLIENT_DIR + "{client}.conf", "0600", "vps"),
    # security updates: the package dnf-automatic, its timer enabled (UPDATES_TIMER)
    Install("dnf/automatic.conf", "/etc/dnf/automatic.conf", "0644", "updates"),
)

VM_FILES = (
    Install("ssh/sshd_config", "/etc/ssh/sshd_config", "0600", "sshd"),
    # outbound (egress): the kickstart's `firewall` command configures the inbound side
    Install("firewalld/policies/*.xml", "/etc/firewalld/policies/", "0644", "firewall"),
    Install("wazuh/ossec.conf", wazuh_family.INSTALL_PATH, wazuh_family.INSTALL_MODE, "wazuh",
            wazuh_family.INSTALL_OWNER),
    Install("luks/moat-luks-provision", _luks_install_path(), "0700", "luks"),
)

# cloudinit: the seeds' modes depend on what each VM's user-data reads (seed_copies); images:
# host/images.json, the golden images %post copies from the medium (golden_images)
AFTER = tuple(sorted({i.family for i in HOST_FILES + VM_FILES if (RENDER_DIR / f"{i.family}.py").exists()}
                     | {f for f in ("cloudinit", "images") if (RENDER_DIR / f"{f}.py").exists()}))

# --- validators ------------------------------------------------------------------------------


def ksvalidator() -> str:
    """ksvalidator of the Python environment moat runs in (PyPI pykickstart), else from PATH.
    os.path.exists, not Path.exists: a directory this user may not read means absent, not a crash."""
    beside = Path(sys.executable).parent / "ksvalidator"
    return str(beside) if os.path.exists(beside) else (shutil.which("ksvalidator") or "ksvalidator")


VALIDATORS = (
    Validator("host/kickstart/ks.cfg", (str(TOOLS / "kickstart.sh"), ksvalidator(), "{file}"), "pypi:pykickstart",
              needs=ksvalidator(), batch=True),
    Validator("vms/*/kickstart/ks.cfg", (str(TOOLS / "kickstart.sh"), ksvalidator(), "{file}"), "pypi:pykickstart",
              needs=ksvalidator(), batch=True),
)

# --- decisions -------------------------------------------------------------------------------

# room in the encrypted PV beyond root + swap: LUKS2 header (16 MiB), LVM metadata (1 MiB) and
# rounding of each logical volume up to 4 MiB extents
PV_SLACK_MIB = 64
ROOT_VG = "system"
VG_KEYS_DIR = "/etc/moat/luks"
EPEL_METALINK = "https://mirrors.fedoraproject.org/metalink?repo=epel-9&arch=x86_64"
WAZUH_BASEURL = "https://packages.wazuh.com/4.x/yum/"
WAZUH_GPGKEY = "https://packages.wazuh.com/key/GPG-KEY-WAZUH"
HOST_PACKAGES = ("@^minimal-environment", "qemu-kvm", "libvirt", "virt-install", "firewalld", "nftables",
                 "policycoreutils-python-utils", "chrony")
VM_PACKAGES = ("@^minimal-environment", "firewalld", "policycoreutils-python-utils", "chrony")
LIBVIRT_SERVICES = ("virtqemud", "virtnetworkd", "virtstoraged")
UPDATES_CONF = "dnf/automatic.conf"    # under host/ in the bundle (updates family)
UPDATES_PACKAGE = "dnf-automatic"      # AppStream
UPDATES_TIMER = "dnf-automatic.timer"  # the timer that does what automatic.conf says


@attrs.frozen
class Derived:
    """A value computed from blueprint fields; `at` keeps provenance on the main one."""

    value: Any
    at: BlueprintPath

    def __str__(self) -> str:
        return str(self.value)


@attrs.frozen
class Copy:
    """One bundle file %post installs: medium path, destination, mode, owner, sha256."""

    source: str
    dest: str
    mode: str
    owner: str
    sha256: str
    enable: str | None = None  # unit name to enable


@attrs.frozen
class SecretCopy:
    """One file %post copies from the medium's secrets (not in the bundle, so no sha256):
    `name` under moat/secrets/ (what `moat iso --secrets` puts there), destination, mode."""

    name: str
    dest: str
    mode: str = SECRET_MODE
    owner: str | None = None  # set by the chroot %post (chown OWNER:), where the user exists
    user: User | None = None  # provenance: the blueprint user it belongs to


@attrs.frozen
class SeedCopy:
    """A VM's seed %post copies from the medium's moat/seeds/ into the seed pool: `name`, mode
    (SECRET_SEED_MODE when it holds secrets). `at` is the VM's install node."""

    name: str
    mode: str
    secrets: tuple[str, ...]
    at: BlueprintPath = ()


@attrs.frozen
class VmNic:
    """A VM NIC for the kickstart: blueprint NIC (address), resolved (MAC), network; `primary`
    is the first NIC on a nat network, which gets the default route, DNS and the host name."""

    nic: Nic
    resolved: ResolvedNic
    net: ResolvedNetwork
    primary: bool


@attrs.frozen
class Port:
    port: int
    proto: str
    why: str


def copies(bundle: dict[str, Output], prefix: str, table: tuple[Install, ...], **fields: str) -> list[Copy]:
    """The files of `bundle` under `prefix` that `table` installs, in table then path order. A
    directory destination keeps the path below the pattern's fixed directories
    (libvirt/volumes/*/*.xml -> <dest>/<pool>/<volume>.xml); `{field}` in a destination is
    filled from `fields` (the table's {client})."""
    found = []
    for entry in table:
        head = entry.pattern.split("*", 1)[0]
        fixed = head[:head.rfind("/") + 1]
        for path in sorted(p for p in bundle if p.startswith(prefix) and fnmatch.fnmatchcase(p[len(prefix):], entry.pattern)):
            rel = path[len(prefix):]
            dest = entry.dest + rel[len(fixed):] if entry.dest.endswith("/") else entry.dest
            dest = dest.format_map(fields) if "{" in dest else dest
            found.append(Copy(path, dest, entry.mode, entry.owner, hashlib.sha256(bundle[path].content).hexdigest(),
                              rel.rsplit("/", 1)[-1] if entry.enable else None))
    return found


def openvpn_client_secrets(plan: Plan, bundle: dict[str, Output]) -> list[SecretCopy]:
    """The key material of the home host's OpenVPN client, where its client.conf names it: the
    `ca`, `cert`, `key` and `tls-crypt` files, from the secrets directory's PKI (compiler/secrets.py
    layout). Nothing without `vps`."""
    vps = plan.blueprint.vps
    conf = bundle.get("host/" + OPENVPN_CLIENT_CONF)
    if vps is None or conf is None:
        return []
    sources = {"ca": f"{OPENVPN_DIR}/ca.crt", "cert": f"{CLIENTS_DIR}/{vps.client}.crt",
               "key": f"{CLIENTS_DIR}/{vps.client}.key", "tls-crypt": f"{OPENVPN_DIR}/tls-crypt.key"}
    named = dict(re.findall(r"^(ca|cert|key|tls-crypt)[ \t]+(/\S+)[ \t]*$", conf.content.decode(), re.MULTILINE))
    assert set(named) == set(sources), f"{OPENVPN_CLIENT_CONF} names {sorted(named)}, not {sorted(sources)}"
    return [SecretCopy(sources[directive], named[directive]) for directive in sources]


def totp_secrets(plan: Plan) -> list[SecretCopy]:
    """Each host user's TOTP secret (host.sshd.totp), installed as their ~/.google_authenticator:
    the files `moat secrets init` makes (compiler/secrets.py totp_secrets)."""
    if not plan.blueprint.host.sshd.totp:
        return []
    return [SecretCopy(totp_file("host", u.name), TOTP_HOME.format(user=u.name), TOTP_MODE, u.name, u)
            for u in plan.host_users]


def relabel(files: list[Copy]) -> list[str]:
    """Trees to restorecon -R after copying: /etc, or the first two levels of a destination
    elsewhere (/usr/local, /var/ossec), which also cover the directories install -D made."""
    tops = set()
    for c in files:
        parts = c.dest.split("/")
        tops.add("/etc" if parts[1] == "etc" else "/" + "/".join(parts[1:3]))
    return sorted(tops)


def sshd_port(bundle: dict[str, Output], path: str) -> int:
    """The Port of a generated sshd_config in the bundle (22 when it sets none or is absent)."""
    out = bundle.get(path)
    found = re.findall(r"^\s*Port\s+([0-9]+)\s*$", out.content.decode() if out else "", re.MULTILINE | re.IGNORECASE)
    return int(found[0]) if found else 22


def checked_users(users: tuple[User, ...]) -> tuple[User, ...]:
    """`users`, after checking that their keys fit between double quotes (kickstart `sshkey`,
    YAML in user-data): the schema forbids quotes, backslashes and control characters in
    blueprint strings (rule unsafe-string); this is the last line of defence."""
    for user in users:
        for key in user.ssh_keys:
            assert not any(c in key for c in '"\\\n'), f"unsafe between double quotes: {key!r}"
    return users


def unlock_sshd() -> dict[str, tuple[str, ...]]:
    """Algorithms of the initramfs sshd: the sshd family's (all known to OpenSSH 8.7)."""
    from . import sshd

    return dict(hostkey=sshd.HOSTKEY_ALGORITHMS, kex=sshd.KEX, ciphers=sshd.CIPHERS, macs=sshd.MACS)


def seed_copies(plan: Plan, bundle: dict[str, Output]) -> list[SeedCopy]:
    """The seeds of plan's VMs, each with the secrets its consumer reads from it (as `moat iso`
    finds them: moat/secrets/<name> in the VM's user-data or kickstart). `bundle` holds the
    cloud-init files and the VMs' kickstarts."""
    found = []
    for rv in plan.vms:
        seed = seed_of(rv.vm)
        if seed is None:
            continue
        consumer = f"vms/{rv.name}/" + ("cloud-init/user-data" if seed.kind == "cidata" else "kickstart/ks.cfg")
        secrets = tuple(secrets_read_by(bundle[consumer].content)) if consumer in bundle else ()
        found.append(SeedCopy(seed.name, SECRET_SEED_MODE if secrets else SEED_MODE, secrets, seed.at))
    return found


def golden_images(bundle: dict[str, Output]) -> list[str]:
    """The files of the golden images the bundle's VMs are installed from (NAME-KEY.qcow2, as
    host/images.json lists them): `moat iso` puts them on the host's medium."""
    listed = bundle.get(HOST_IMAGES)
    return sorted(image["file"] for image in json.loads(listed.content)["images"]) if listed else []


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    vms = [vm_kickstart(plan, rv, bundle) for rv in plan.vms if rv.vm.install.method == "kickstart"]
    yield host_kickstart(plan, {**bundle, **{out.path: out for out in vms}})
    yield from vms


def common_context(search: tuple[str, ...]) -> dict[str, Any]:
    return dict(medium_bundle=MEDIUM_BUNDLE, medium_secrets=MEDIUM_SECRETS, medium_search=search,
                medium_label=MEDIUM_LABEL, medium_mount=MEDIUM_MOUNT)


def host_kickstart(plan: Plan, bundle: dict[str, Output]) -> Output:
    bp = plan.blueprint
    host = bp.host
    disk = host.disk
    uplink = host.uplink
    enc = disk.encryption
    vps = bp.vps
    files = copies(bundle, "host/", HOST_FILES, **({"client": vps.client} if vps else {}))
    installed = {c.source[len("host/"):] for c in files}
    openvpn = OPENVPN_CLIENT_CONF in installed
    openvpn_keys = openvpn_client_secrets(plan, bundle) if openvpn else []
    totp_keys = totp_secrets(plan)
    fail2ban = any(p.startswith("fail2ban/") for p in installed)
    totp = "pam.d/sshd" in installed
    wazuh = plan.wazuh is not None and "host" in plan.wazuh.agents
    admins = [u for u in checked_users(plan.host_users) if u.sudo]
    unlock = bool(enc and admins)  # remote unlock: only for administrators
    epel_for = (["dracut-sshd (remote unlock)"] if unlock else []) + (["fail2ban"] if fail2ban else []) \
        + (["google-authenticator (TOTP)"] if totp else []) + (["openvpn (the tunnel to the VPS)"] if openvpn else [])
    epel = bool(epel_for)
    packages = list(HOST_PACKAGES)
    if enc:
        packages += ["cryptsetup"]
    if unlock:
        packages += ["dracut-network", "dracut-sshd"]
    if fail2ban:
        packages += ["fail2ban-server", "fail2ban-systemd"]
    if totp:
        packages += ["google-authenticator"]
    if epel:
        packages += ["epel-release"]
    if wazuh:
        packages += ["wazuh-agent"]
    if openvpn:
        packages += ["openvpn"]
    updates = UPDATES_CONF in installed
    if updates:
        packages += [UPDATES_PACKAGE]
    services = ["sshd", "firewalld", *LIBVIRT_SERVICES, "chronyd"]
    services += ["fail2ban"] if fail2ban else []
    services += ["wazuh-agent"] if wazuh else []
    vg = disk.volume_group
    root_vg = ROOT_VG if vg != ROOT_VG else ROOT_VG + "0"
    nameservers = uplink.dns or (uplink.gateway,)
    fqdn = Derived(f"{host.name}.{host.domain}", host.at + ("name",))
    # kernel command line of the initramfs network: ip=<client>::<gateway>:<netmask>:<hostname>:<interface>:none
    units = [c.enable for c in files if c.enable]
    if openvpn:
        units.append(Derived(OPENVPN_CLIENT_UNIT.format(client=vps.client), vps.at + ("client",)))
    if updates:
        units.append(Derived(UPDATES_TIMER, host.updates.at + ("automatic",)))
    pool = seed_pool(bp)
    seeds = seed_copies(plan, bundle) if pool is not None else []
    restore = relabel(files) + ([pool.path] if pool is not None else []) + [k.dest for k in totp_keys]
    cmdline = None
    if unlock:
        cmdline = Derived(f"rd.neednet=1 ip={uplink.address.ip}::{uplink.gateway}:{uplink.address.netmask}:{fqdn}:"
                          f"{uplink.interface}:none", uplink.at + ("address",))
    return template(
        "host/kickstart/ks.cfg", "kickstart/host.ks.j2",
        blueprint=bp, host=host, uplink=uplink, disk=disk, encryption=enc, fqdn=fqdn,
        nameservers=nameservers, dns_defaulted=not uplink.dns, users=checked_users(plan.host_users), admins=admins,
        packages=packages, services=services, epel=epel, epel_for=epel_for, epel_metalink=EPEL_METALINK, wazuh=wazuh,
        wazuh_baseurl=WAZUH_BASEURL, wazuh_gpgkey=WAZUH_GPGKEY, root_vg=root_vg,
        pv_size=Derived(disk.root + disk.swap + PV_SLACK_MIB, disk.at + ("root",)), pv_slack=PV_SLACK_MIB,
        luks_secret=secret_name(enc.passphrase) if enc else None, luks_include=LUKS_INCLUDE, cmdline=cmdline,
        vg_keyfile=f"{VG_KEYS_DIR}/{vg}.key", vg_keys_dir=VG_KEYS_DIR, files=files,
        unlock_keys=admins if unlock else [], unlock_sshd=unlock_sshd(), ssh_port=host.sshd.port,
        units=units, restore=restore, vps=vps, openvpn_keys=openvpn_keys, totp_keys=totp_keys,
        seed_pool=pool, seeds=seeds, seed_dir=SEED_DIR, seed_sums=SUMS, seed_selinux=SELINUX_TYPE,
        seed_fcontext=selinux_spec(pool.path) if pool is not None else None,
        golden_images=golden_images(bundle), host_images=HOST_IMAGES, images_dir=IMAGES_DIR, image_sums=SUMS,
        host_images_dir=HOST_IMAGES_DIR, state_dir=HOST_STATE_DIR,
        **common_context(HOST_MEDIUM_SEARCH))


def vm_kickstart(plan: Plan, rv: ResolvedVm, bundle: dict[str, Output]) -> Output:
    bp = plan.blueprint
    prefix = f"vms/{rv.name}/"
    networks = {n.network.name: n for n in plan.networks}
    nics: list[VmNic] = []
    for nic, resolved in zip(rv.vm.nics, rv.nics):
        net = networks[nic.network]
        primary = net.network.mode == "nat" and not any(n.primary for n in nics)
        nics.append(VmNic(nic, resolved, net, primary))
    files = copies(bundle, prefix, VM_FILES)
    luks = next((c for c in files if c.source.endswith("luks/moat-luks-provision")), None)
    wazuh = plan.wazuh is not None and rv.name in plan.wazuh.agents
    ssh_port = sshd_port(bundle, prefix + "ssh/sshd_config")
    ports = [Port(f.to_port, f.forward.proto, f"forwarded from public port {f.forward.port}/{f.forward.proto}")
             for f in plan.forwards_to(rv.name)]
    if plan.wazuh is not None and plan.wazuh.manager == rv.name:
        ports += [Port(wazuh_family.EVENTS_PORT, "tcp", "Wazuh agent events"),
                  Port(wazuh_family.ENROLLMENT_PORT, "tcp", "Wazuh agent enrollment")]
    packages = list(VM_PACKAGES)
    if luks:
        from .luks import GUEST_PACKAGES

        packages += list(GUEST_PACKAGES)
    if wazuh:
        packages += ["wazuh-agent"]
    services = ["sshd", "firewalld", "chronyd"] + (["wazuh-agent"] if wazuh else [])
    return template(
        f"{prefix}kickstart/ks.cfg", "kickstart/vm.ks.j2",
        blueprint=bp, vm=rv.vm, nics=nics, users=checked_users(rv.users),
        admins=[u for u in rv.users if u.sudo], ssh_port=ssh_port, ports=ports, packages=packages,
        services=services, wazuh=wazuh, wazuh_baseurl=WAZUH_BASEURL, wazuh_gpgkey=WAZUH_GPGKEY, files=files,
        luks=luks, luks_secret=vm_luks_secret(rv.name) if luks else None, restore=relabel(files),
        units=[], **common_context(VM_MEDIUM_SEARCH))
