"""Traffic mirror for the IDS: the tc script, its systemd unit, and the bridge as a NetworkManager keyfile.

Only when the blueprint has `mirror`. Every packet in and out of the mirrored interface (the
uplink by default) is copied to the bridge of the `mirror` network (tc clsact + u32 + mirred),
where the IDS VM's second NIC listens. NetworkManager owns the bridge (no address, no STP);
a oneshot unit adds the filters once the network is online and both devices exist.

Checks: shellcheck on the script; systemd-analyze verify on the unit installed with the script in
a throwaway root (compiler/verify_tools/systemd-unit.sh); NetworkManager's own keyfile reader
(libnm) on the keyfile (mirror-nmconnection.sh). tests/test_mirror.py also runs the script in
network namespaces and the NetworkManager daemon on the keyfile.

Install paths (the installer copies bundle files there):
  host/mirror/moat-mirror                 -> /usr/local/libexec/moat/moat-mirror            0555
  host/systemd/moat-mirror.service        -> /etc/systemd/system/moat-mirror.service        0644
  host/NetworkManager/system-connections/<bridge>.nmconnection
                                          -> /etc/NetworkManager/system-connections/        0600 root
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import attrs

from ..derive import Plan, stable_uuid
from ..diagnostics import Path as BlueprintPath
from ..verify import Validator
from . import Output, template

TOOLS = Path(__file__).resolve().parent.parent / "verify_tools"

SCRIPT = "host/mirror/moat-mirror"
SCRIPT_INSTALLED = "/usr/local/libexec/moat/moat-mirror"
UNIT = "host/systemd/moat-mirror.service"
UNIT_INSTALLED = "/etc/systemd/system/moat-mirror.service"
NM_CONNECTIONS = "host/NetworkManager/system-connections"
NM_CONNECTIONS_INSTALLED = "/etc/NetworkManager/system-connections"

# Our tc filters: first in line on ingress (pref 1) and egress (pref 2), so no other filter can
# hide a packet from the IDS, with an action cookie ("moat" in hex) marking them ours. The prefs
# differ because cls_u32 shares its hash tables between a clsact's ingress and egress: with one
# pref, `tc filter show` of either direction lists the filters of both.
FILTER_PREFS = {"ingress": 1, "egress": 2}
FILTER_COOKIE = "moat".encode().hex()


VALIDATORS = (
    Validator(SCRIPT, ("shellcheck", "-S", "warning", "-f", "gcc", "{file}"), "shellcheck"),
    # systemd-analyze verify --root=TMP with the unit and the script at their install paths
    Validator(UNIT, (str(TOOLS / "systemd-unit.sh"), "{file}", UNIT, UNIT_INSTALLED, f"{SCRIPT_INSTALLED}={SCRIPT}"),
             "systemd", needs="systemd-analyze"),
    # NetworkManager's own keyfile reader (libnm through python3-gi): warnings, verify, ignored keys
    Validator(f"{NM_CONNECTIONS}/*.nmconnection", (str(TOOLS / "mirror-nmconnection.sh"), "{file}"),
              "gir1.2-nm-1.0 python3-gi"),
)


@attrs.frozen
class Derived:
    """A value computed from one blueprint field; `at` keeps provenance on that field."""

    value: str
    at: BlueprintPath

    def __str__(self) -> str:
        return self.value


def device_unit(ifname: str) -> str:
    """systemd's device unit for a network interface, as `systemd-escape --path --suffix=device
    /sys/subsystem/net/devices/NAME` names it. Interface names are [a-zA-Z0-9_.-] starting with a
    letter (schema `ifname`): only '-' needs escaping."""
    return "sys-subsystem-net-devices-" + ifname.replace("-", "\\x2d") + ".device"


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    if plan.mirror is None:
        return
    bp = plan.blueprint
    assert bp.mirror is not None
    network = next(n for n in bp.networks if n.name == bp.mirror.network)
    # the object whose `interface` field names the mirrored interface, for provenance
    source = bp.mirror if bp.mirror.interface else bp.host.uplink
    interface_field = ("mirror.interface" if bp.mirror.interface
                       else "host.uplink.interface (mirror.interface is not set)")
    bridge_field = f"networks[{network.name}].bridge, the network named by mirror.network"
    assert source.interface == plan.mirror.interface and network.bridge == plan.mirror.bridge
    bridge_at = network.at + ("bridge",)
    devices = (Derived(device_unit(source.interface), source.at + ("interface",)),
               Derived(device_unit(network.bridge), bridge_at))
    common = dict(source=source, network=network, script_installed=SCRIPT_INSTALLED)
    yield template(SCRIPT, "mirror/moat-mirror.sh.j2", mode=0o555, **common,
                   interface_field=interface_field, bridge_field=bridge_field,
                   prefs=FILTER_PREFS, cookie=FILTER_COOKIE)
    yield template(UNIT, "mirror/moat-mirror.service.j2", **common, devices=devices, unit_installed=UNIT_INSTALLED)
    yield template(f"{NM_CONNECTIONS}/{network.bridge}.nmconnection", "mirror/bridge.nmconnection.j2", **common,
                   installed=Derived(f"{NM_CONNECTIONS_INSTALLED}/{network.bridge}.nmconnection", bridge_at),
                   uuid=stable_uuid("moat-nm-connection", bp.name, network.name))
