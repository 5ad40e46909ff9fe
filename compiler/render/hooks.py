"""libvirt hooks: the qemu hook that opens the blueprint's port forwards while their VM runs.

One self-contained POSIX sh script, `host/libvirt/hooks/qemu` (installed as
/etc/libvirt/hooks/qemu). The forwards are rendered into it as a `case` on the VM name, so
there is no configuration file and nothing to clone: at `<vm> start begin` (and `reconnect
begin` after a libvirtd restart) it writes the VM's DNAT chains into its own nftables table
`ip moat_forwards`, at `<vm> stopped end` / `release end` it deletes them. See the header of
the template for why those operations, and for the accept it also puts in libvirt's filter.

Each forward is DNATed on every interface its packets arrive on (derive.ResolvedForward.ingress:
the uplink, and the OpenVPN tunnel for the forwards of this host's VPS sites).
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Iterator

import attrs

from ..derive import Plan, ResolvedForward, ResolvedVm
from ..model import Network, Nic
from ..verify import Validator
from . import Output, template

VERIFY_TOOLS = FsPath(__file__).resolve().parent.parent / "verify_tools"

# nftables table of the hook; the firewall family's forward chain accepts what it DNATs
TABLE = "moat_forwards"

VALIDATORS = (
    Validator("host/libvirt/hooks/qemu", ("shellcheck", "--severity=warning", "--shell=sh", "{file}"), "shellcheck"),
    # runs the hook in dry-run mode for every VM (start and stop) in a fresh network namespace:
    # each nft batch it would apply is checked by the kernel with `nft -c`
    Validator("host/libvirt/hooks/qemu", (str(VERIFY_TOOLS / "hooks-qemu.sh"), "{file}"), "nftables", needs="nft"),
)


@attrs.frozen
class VmForwards:
    """The forwards to one VM, with the NIC (and its network) that receives them."""

    vm: ResolvedVm
    nic: Nic          # the VM's NIC on its first nat network (blueprint node: its address)
    network: Network  # that NIC's network: the forwarded packets leave through its bridge
    forwards: tuple[ResolvedForward, ...]


def forwards_by_vm(plan: Plan) -> list[VmForwards]:
    """Forwards grouped by target VM, VMs by name, each VM's forwards by (proto, port)."""
    grouped = []
    for rvm in plan.vms:
        mine = plan.forwards_to(rvm.name)
        if not mine:
            continue
        resolved = next(n for n in rvm.nics if n.address == mine[0].address)
        nic = next(n for n in rvm.vm.nics if n.network == resolved.network.name)
        grouped.append(VmForwards(rvm, nic, resolved.network, mine))
    return grouped


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    # rendered even without forwards: stopping a VM still removes forwards an older bundle added
    yield template("host/libvirt/hooks/qemu", "hooks/qemu.sh.j2", mode=0o555, table=TABLE,
                   uplink=plan.blueprint.host.uplink, tunnel=plan.tunnel, vms=forwards_by_vm(plan))
