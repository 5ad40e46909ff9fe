"""cloud-init NoCloud seeds for the VMs installed from a golden image (install.method `image`).

For each such VM the bundle holds, under `vms/<vm>/cloud-init/`:
- `user-data` (#cloud-config): host name, the VM's users (SSH keys only, locked passwords,
  passwordless sudo for `sudo` users since no password exists), no root login, no password
  authentication, and `write_files` carrying the VM's files from other families: its
  sshd_config (sshd), its Wazuh agent ossec.conf (wazuh), its LUKS provisioning script (luks),
  plus the two files below; `runcmd` runs moat-firstboot once.
- `meta-data`: `instance-id` = blueprint + VM + sha256 of user-data and network-config, so a
  changed seed is a new instance (cloud-init runs its per-instance modules again, which also
  makes new SSH host keys); `local-hostname`.
- `network-config` (version 2, under a top-level `network:` key, which netplan needs and
  cloud-init removes): each NIC matched by its MAC and renamed eth0, eth1, ... in blueprint
  order; on a `nat` network the static address (the same as the DHCP lease in
  host/libvirt/networks/<net>.xml), the default route via the network's gateway on the first
  nat NIC only, and the gateway as DNS server (libvirt's dnsmasq); a `mirror` NIC is brought
  up without any address (the IDS sniffs it).
- `nftables.conf`: the VM's firewall, installed as /etc/nftables.conf. nftables rather than
  ufw: one declarative ruleset that `nft -c` checks here, loaded atomically, the same tool as
  the host's, no Python daemon; ufw is disabled if the image has it. Inbound is dropped except
  established traffic, loopback, the ICMP needed for path MTU, SSH from the VM's own nat
  subnets (the host and the other VMs), each port forwarded to this VM (plan.forwards,
  to_port, from anywhere since DNAT keeps the client's address), and Wazuh's ports from the
  nat subnets on the manager VM. Outbound (chain output, templates/firewall/egress.nft.j2): only
  the VM's egress plan (derive.egress_plans: its gateway's DNS, NTP, the mirrors, the Wazuh
  manager, its egress.allow); the rest is logged and dropped.
- `moat-firstboot`: the script runcmd runs (see its header): firewall, sshd, Wazuh agent,
  LUKS provisioning of the data disks.

Secrets: the data disks' initial LUKS passphrase is never in the bundle nor in user-data
(cloud-init keeps a copy of user-data on the VM's disk). When install media are produced,
the secrets step writes it as `moat/secrets/<vm>-luks` (see media/layout.py vm_luks_secret) on the
seed volume itself (label CIDATA) beside user-data; moat-firstboot mounts the seed read-only,
passes that file to the luks script and unmounts it. Detach the seed after the first boot.

The golden image must contain (GUEST_PACKAGES): nftables, openssh-server, and for encrypted
data disks cryptsetup and e2fsprogs; wazuh-agent for Wazuh agents. The seed installs nothing
from the network, so a VM comes up the same way every time; moat-firstboot fails loudly when
a tool is missing.

Validators: `cloud-init schema -c user-data` (Debian's cloud-init 22.4, unpacked by
tests/system/install.sh under /opt/moat-tools/cloud-init); on network-config, cloud-init's
own parser and renderers (`cloud-init devel net-convert` for networkd and ENI) and
`netplan generate --root-dir` (Ubuntu hands version 2 to netplan); `nft -c` on nftables.conf
(in a new network namespace); shellcheck on moat-firstboot.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import attrs

from ..derive import Plan, ResolvedNetwork, ResolvedNic, ResolvedVm
from ..media.layout import MEDIUM_SECRETS, vm_luks_secret
from ..model import Nic
from ..verify import Validator
from . import Output, template
from . import luks as luks_family
from . import wazuh as wazuh_family
from .kickstart import checked_users, sshd_port

AFTER = tuple(name for name in ("sshd", "luks", "wazuh") if (Path(__file__).parent / f"{name}.py").exists())

TOOLS = Path(__file__).resolve().parent.parent / "verify_tools"
# where tests/system/install.sh unpacks Debian's cloud-init package (not installed: no services)
CLOUD_INIT_ROOT = Path("/opt/moat-tools/cloud-init")

SEED_LABELS = ("CIDATA", "cidata")  # NoCloud accepts either
FIRSTBOOT_PATH = "/usr/local/sbin/moat-firstboot"
WAZUH_STAGED = "/etc/moat/wazuh/ossec.conf"  # moved to the agent's directory by moat-firstboot
NFTABLES_PATH = "/etc/nftables.conf"          # read by nftables.service on Debian/Ubuntu
SSHD_CONFIG_PATH = "/etc/ssh/sshd_config"
GUEST_PACKAGES = ("nftables", "openssh-server")  # + luks.GUEST_PACKAGES, wazuh-agent when used


VALIDATORS = (
    # cloud-init is unpacked from Debian's package by tests/system/install.sh, not installed
    # `cloud-init schema` on user-data, `devel net-convert` on network-config: one command, so
    # the files of both kinds share a batch, and cloud-init's Python starts once for them
    Validator("vms/*/cloud-init/user-data", (str(TOOLS / "cloudinit.sh"), "{file}"), "cloud-init",
              needs=str(CLOUD_INIT_ROOT / "usr/bin/cloud-init"), batch=True),
    Validator("vms/*/cloud-init/network-config", (str(TOOLS / "cloudinit.sh"), "{file}"), "cloud-init",
              needs=str(CLOUD_INIT_ROOT / "usr/bin/cloud-init"), batch=True),
    Validator("vms/*/cloud-init/network-config", (str(TOOLS / "cloudinit-netplan.sh"), "{file}"), "netplan.io",
              needs="netplan", batch=True),
    Validator("vms/*/cloud-init/nftables.conf", (str(TOOLS / "cloudinit-nft.sh"), "{file}"), "nftables", batch=True,
              needs="nft"),
    Validator("vms/*/cloud-init/moat-firstboot", ("shellcheck", "-S", "warning", "-s", "sh", "{file}"), "shellcheck",
              batch=True),
)


@attrs.frozen
class NicConfig:
    """One NIC of the VM as the guest sees it: `nic` is the blueprint's (address traces to it),
    `resolved` carries the MAC (given or derived), `net` the resolved network."""

    name: str
    nic: Nic
    resolved: ResolvedNic
    net: ResolvedNetwork
    default_route: bool


@attrs.frozen
class Port:
    port: int
    proto: str
    why: str
    at: tuple = ()


@attrs.frozen
class EmbeddedFile:
    """A file of the bundle carried in user-data's write_files."""

    bundle_path: str
    path: str
    permissions: str
    lines: tuple[str, ...]


def image_vms(plan: Plan) -> list[ResolvedVm]:
    return [rv for rv in plan.vms if rv.vm.install.method == "image"]


def instance_id(blueprint: str, vm: str, user_data: bytes, network_config: bytes) -> str:
    """iid-<blueprint>-<vm>-<12 hex of sha256(user-data, network-config)>: same seed, same id."""
    digest = hashlib.sha256(b"moat-cloud-init\0" + user_data + b"\0" + network_config).hexdigest()
    return f"iid-{blueprint}-{vm}-{digest[:12]}"


def nic_configs(plan: Plan, rv: ResolvedVm) -> list[NicConfig]:
    networks = {n.network.name: n for n in plan.networks}
    configs, routed = [], False
    for i, (nic, resolved) in enumerate(zip(rv.vm.nics, rv.nics)):
        net = networks[nic.network]
        default = net.network.mode == "nat" and not routed
        routed = routed or default
        configs.append(NicConfig(f"eth{i}", nic, resolved, net, default))
    return configs


def _lines(content: bytes) -> tuple[str, ...]:
    """The lines of a file for a YAML literal block (`content: |`): it must end with a newline
    and not start with a blank, or YAML would take a different indentation."""
    text = content.decode()
    assert text.endswith("\n") and not text[:1].isspace(), "file not embeddable in a YAML literal block"
    return tuple(text.splitlines())


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    bp = plan.blueprint
    luks = luks_family
    for rv in image_vms(plan):
        base = f"vms/{rv.name}/cloud-init"
        nics = nic_configs(plan, rv)
        nat = {c.net.network.name: c.net for c in nics if c.net.network.mode == "nat"}
        nat_networks = [nat[name] for name in sorted(nat)]
        sshd = bundle.get(f"vms/{rv.name}/ssh/sshd_config")
        ssh_port = sshd_port(bundle, f"vms/{rv.name}/ssh/sshd_config")
        # one rule per port of the VM, whichever public ports lead to it: a new public port onto a
        # port the VM already serves changes the host alone, not the VM (no reinstall)
        firsts = {}
        for f in plan.forwards_to(rv.name):
            firsts.setdefault((f.to_port, f.forward.proto), f)
        forwarded = [Port(port, proto, f"{port}/{proto}: public ports of the host are forwarded here", f.forward.at) for (port, proto), f in firsts.items()]
        manager = plan.wazuh is not None and plan.wazuh.manager == rv.name
        wazuh_ports = ((wazuh_family.EVENTS_PORT, "tcp", "Wazuh agent events"),
                       (wazuh_family.ENROLLMENT_PORT, "tcp", "Wazuh agent enrollment")) if manager else ()
        nft = template(f"{base}/nftables.conf", "cloudinit/nftables.conf.j2", vm=rv.vm, nat_networks=nat_networks,
                       ssh_port=ssh_port, forwarded=forwarded, wazuh_ports=wazuh_ports,
                       egress=plan.egress_of(rv.name))
        yield nft

        wazuh_conf = bundle.get(wazuh_family.agent_path(rv.name)) if plan.wazuh else None
        luks_script = bundle.get(luks.script_path(rv.name))
        secret = vm_luks_secret(rv.name) if luks_script else None
        firstboot = template(f"{base}/moat-firstboot", "cloudinit/moat-firstboot.sh.j2", mode=0o555, vm=rv.vm,
                             nftables_path=NFTABLES_PATH, sshd_config_path=SSHD_CONFIG_PATH if sshd else None,
                             wazuh_staged=WAZUH_STAGED if wazuh_conf else None,
                             wazuh_path=wazuh_family.INSTALL_PATH, wazuh_mode=wazuh_family.INSTALL_MODE,
                             luks_path=luks.INSTALL_PATH if luks_script else None,
                             secret_file=f"{MEDIUM_SECRETS}/{secret}" if secret else None,
                             seed_labels=SEED_LABELS, install_path=FIRSTBOOT_PATH)
        yield firstboot

        files = []
        if sshd:
            files.append(EmbeddedFile(sshd.path, SSHD_CONFIG_PATH, "0600", _lines(sshd.content)))
        files.append(EmbeddedFile(nft.path, NFTABLES_PATH, "0600", _lines(nft.content)))
        if wazuh_conf:
            files.append(EmbeddedFile(wazuh_conf.path, WAZUH_STAGED, "0600", _lines(wazuh_conf.content)))
        if luks_script:
            files.append(EmbeddedFile(luks_script.path, luks.INSTALL_PATH, "0700", _lines(luks_script.content)))
        files.append(EmbeddedFile(firstboot.path, FIRSTBOOT_PATH, "0700", _lines(firstboot.content)))

        user_data = template(f"{base}/user-data", "cloudinit/user-data.j2", blueprint=bp, vm=rv.vm, image=rv.image,
                             users=checked_users(rv.users),
                             files=files, firstboot=FIRSTBOOT_PATH, secret=secret, secrets_dir=MEDIUM_SECRETS,
                             seed_label=SEED_LABELS[0])
        network_config = template(f"{base}/network-config", "cloudinit/network-config.j2", vm=rv.vm, nics=nics)
        yield user_data
        yield network_config
        yield template(f"{base}/meta-data", "cloudinit/meta-data.j2", vm=rv.vm, blueprint=bp,
                       instance_id=instance_id(bp.name, rv.name, user_data.content, network_config.content))
