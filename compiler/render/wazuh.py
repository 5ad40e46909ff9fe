"""Wazuh agents: one ossec.conf per agent, reporting to the manager VM (monitoring.wazuh).

Only when the blueprint has `monitoring.wazuh`. For every name in plan.wazuh.agents the
bundle holds the agent's configuration, `host/wazuh/ossec.conf` for "host" and
`vms/<vm>/wazuh/ossec.conf` for a VM, to be installed as /var/ossec/etc/ossec.conf
(root:wazuh 0640; see INSTALL_PATH). The kickstart and cloud-init families copy it there.

Decisions (each also stated in the generated file):
- events to the manager's address on its first NAT network, port 1514/tcp; enrollment
  (agent-auth) to the same address, port 1515; the agent name is the host or VM name. When
  the manager requires an enrollment password, the install step puts it in
  /var/ossec/etc/authd.pass, which the agent reads by default: it is never in the bundle.
- log collection: the journal (sshd, sudo, systemd; needs agent >= 4.8) on every agent, plus
  /var/log/secure and the audit log on Rocky/Alma (host, kickstart VMs) and /var/log/auth.log
  on Debian/Ubuntu golden images (image VMs); ISO-installed VMs get the journal only.
- file integrity (syscheck) of /etc, the system binaries and /boot every 12 h, /etc also in
  real time; rootcheck every 12 h.
- active response is disabled: the manager cannot run commands on the agents.

No validator runs the agent here (packages.wazuh.com is not reachable from the build
machines, and Debian has no wazuh-agent package): `xmllint --noout` checks that the file is
well-formed XML, which is what the agent's own parser needs first.
"""

from __future__ import annotations

from typing import Iterator

import attrs

from ..derive import WAZUH_ENROLLMENT_PORT, WAZUH_EVENTS_PORT, Plan
from ..model import Host, Vm
from ..verify import Validator
from . import Output, template
from .luks import KEYS_DIR

INSTALL_PATH = "/var/ossec/etc/ossec.conf"
INSTALL_MODE = "0640"
INSTALL_OWNER = "root:wazuh"
EVENTS_PORT = WAZUH_EVENTS_PORT
ENROLLMENT_PORT = WAZUH_ENROLLMENT_PORT

VALIDATORS = (
    Validator("host/wazuh/ossec.conf", ("xmllint", "--noout", "{file}"), "libxml2-utils"),
    Validator("vms/*/wazuh/ossec.conf", ("xmllint", "--noout", "{file}"), "libxml2-utils"),
)

# log files collected besides the journal, per operating system family
LOGS = {
    "rhel": (("syslog", "/var/log/secure"), ("audit", "/var/log/audit/audit.log")),
    "debian": (("syslog", "/var/log/auth.log"),),
    "unknown": (),
}
# watched by syscheck on every agent; `realtime` ones are also watched with inotify
SYSCHECK_REALTIME = ("/etc",)
# files whose content syscheck never reports (report_changes on /etc would): keys
NODIFF = (r"^/etc/ssh/.*_key$", r"^/etc/ssl/private/", f"^{KEYS_DIR}/", r"^/etc/moat/luks/", r"^/var/ossec/etc/authd.pass$")
SYSCHECK_PERIODIC = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/usr/local/libexec", "/boot")


@attrs.frozen
class Agent:
    """One agent: `source` is the blueprint's host or VM (its name is the agent name), `path`
    the bundle path, `family` the operating system family."""

    source: Host | Vm
    path: str
    family: str   # "rhel", "debian" or "unknown"
    os_note: str  # why that family, for the generated file's comment
    is_host: bool


def agent_path(name: str) -> str:
    """Bundle path of the ossec.conf of agent `name` ("host" or a VM name)."""
    return "host/wazuh/ossec.conf" if name == "host" else f"vms/{name}/wazuh/ossec.conf"


def agents(plan: Plan) -> list[Agent]:
    if plan.wazuh is None:
        return []
    host = plan.blueprint.host
    found = []
    for name in plan.wazuh.agents:
        if name == "host":
            found.append(Agent(host, agent_path(name), "rhel", f"host.os {host.os}", True))
            continue
        rv = plan.vm(name)
        install = rv.vm.install
        if install.method == "kickstart":
            family, note = "rhel", f"installed by kickstart, {install.os}"
        elif install.method == "image":
            family, note = "debian", f"golden image {install.image} (Debian/Ubuntu)"
        else:
            family, note = "unknown", f"installed by hand from {install.iso}"
        found.append(Agent(rv.vm, agent_path(name), family, note, False))
    return found


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    if plan.wazuh is None:
        return
    bp = plan.blueprint
    assert bp.monitoring is not None and bp.monitoring.wazuh is not None
    for agent in agents(plan):
        yield template(agent.path, "wazuh/ossec.conf.xml.j2", agent=agent, wazuh=plan.wazuh,
                       monitoring=bp.monitoring.wazuh, blueprint=bp, events_port=EVENTS_PORT,
                       enrollment_port=ENROLLMENT_PORT, logs=LOGS[agent.family],
                       realtime=SYSCHECK_REALTIME, periodic=SYSCHECK_PERIODIC, nodiff=NODIFF,
                       install_path=INSTALL_PATH, install_mode=INSTALL_MODE, install_owner=INSTALL_OWNER)
