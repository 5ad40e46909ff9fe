"""Wazuh agent configurations: one ossec.conf per agent, checked by xmllint, pointing at the manager.

The agent itself cannot run here (packages.wazuh.com is not reachable and Debian has no
wazuh-agent): the tests parse the XML as the agent would and check what it reads.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from compiler.diagnostics import MoatError
from compiler.pipeline import build_file, check_file
from compiler.render import wazuh
from compiler.verify import Finding, validators_for

from .conftest import ROOT

EXAMPLE = ROOT / "blueprints" / "example.yaml"
VPS_FRONT = ROOT / "blueprints" / "vps-front.yaml"


def validate(blueprint, out, match) -> list[Finding]:
    """Build `blueprint` without the store's validators, then run the validators of the bundle
    files whose path satisfies `match` (the families under test, not every family)."""
    _, stored = build_file(blueprint, out, tools=False)
    findings = []
    for file in sorted(p for p in stored.path.rglob("*") if p.is_file()):
        rel = file.relative_to(stored.path).as_posix()
        if not match(rel):
            continue
        for v in validators_for(rel):
            cmd = [part.replace("{file}", str(file)) for part in v.command]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            findings.append(Finding(rel, v, proc.returncode == 0, (proc.stdout + proc.stderr).strip()))
    return findings


def _agents(files: dict) -> dict[str, ET.Element]:
    return {path: ET.fromstring(out.content) for path, out in files.items() if path.endswith("/wazuh/ossec.conf")}


def vps_front_with_wazuh(tmp_path, agents: str = "") -> object:
    """vps-front has no monitoring: the same blueprint with its only VM as the manager."""
    text = VPS_FRONT.read_text() + f"\nmonitoring:\n  wazuh:\n    manager: nextcloud\n{agents}"
    path = tmp_path / "vps-wazuh.yaml"
    path.write_text(text)
    return path


def test_one_agent_config_per_agent_with_the_manager_address():
    compiled = check_file(EXAMPLE)
    configs = _agents(compiled.files)
    # agents by default: the host and every VM except the manager (onion)
    assert set(configs) == {"host/wazuh/ossec.conf", "vms/nextcloud/wazuh/ossec.conf", "vms/vpn/wazuh/ossec.conf"}
    names = {}
    for path, root in configs.items():
        assert root.tag == "ossec_config"
        server = root.find("client/server")
        assert server.findtext("address") == "192.168.122.50"  # onion's address on the NAT network
        assert server.findtext("port") == "1514" and server.findtext("protocol") == "tcp"
        enrollment = root.find("client/enrollment")
        assert enrollment.findtext("enabled") == "yes"
        assert enrollment.findtext("manager_address") == "192.168.122.50"
        assert enrollment.findtext("port") == "1515"
        names[path] = enrollment.findtext("agent_name")
        assert root.findtext("active-response/disabled") == "yes"
        assert root.findtext("syscheck/disabled") == "no" and root.findtext("rootcheck/disabled") == "no"
        assert "/etc" in [d.text for d in root.findall("syscheck/directories")]
    assert names == {"host/wazuh/ossec.conf": "kvm1", "vms/nextcloud/wazuh/ossec.conf": "nextcloud",
                     "vms/vpn/wazuh/ossec.conf": "vpn"}


def test_logs_follow_the_operating_system():
    configs = _agents(check_file(EXAMPLE).files)

    def logs(path):
        return {(f.findtext("log_format"), f.findtext("location")) for f in configs[path].findall("localfile")}

    journal = ("journald", "journald")
    # the host and the kickstart VM are Rocky: secure log and audit log; the image VM is Ubuntu
    for rocky in ("host/wazuh/ossec.conf", "vms/vpn/wazuh/ossec.conf"):
        assert logs(rocky) == {journal, ("syslog", "/var/log/secure"), ("audit", "/var/log/audit/audit.log")}
    assert logs("vms/nextcloud/wazuh/ossec.conf") == {journal, ("syslog", "/var/log/auth.log")}


def test_keys_are_never_diffed_to_the_manager():
    from compiler.render.kickstart import VG_KEYS_DIR
    from compiler.render.luks import KEYS_DIR

    root = _agents(check_file(EXAMPLE).files)["host/wazuh/ossec.conf"]
    nodiff = [n.text for n in root.findall("syscheck/nodiff")]
    assert f"^{KEYS_DIR}/" in nodiff and f"^{VG_KEYS_DIR}/" in nodiff


def test_explicit_agents_and_no_monitoring(tmp_path):
    # vps-front has no monitoring.wazuh: no agent configuration at all
    assert _agents(check_file(VPS_FRONT).files) == {}
    # the default agent list without VMs besides the manager is the host alone
    assert set(_agents(check_file(vps_front_with_wazuh(tmp_path)).files)) == {"host/wazuh/ossec.conf"}
    # an explicit list is honoured
    configs = _agents(check_file(vps_front_with_wazuh(tmp_path, "    agents: [host]\n")).files)
    assert set(configs) == {"host/wazuh/ossec.conf"}
    assert configs["host/wazuh/ossec.conf"].findtext("client/server/address") == "192.168.122.5"
    # but not the manager itself: the wazuh-agent package conflicts with wazuh-manager
    with pytest.raises(MoatError) as info:
        check_file(vps_front_with_wazuh(tmp_path, "    agents: [host, nextcloud]\n"))
    assert [d.rule for d in info.value.diagnostics if d.is_error] == ["self-reference"]


def test_xmllint_passes_on_every_agent_config(tmp_path):
    for blueprint in (EXAMPLE, vps_front_with_wazuh(tmp_path)):
        findings = validate(blueprint, tmp_path / blueprint.stem, lambda path: path.endswith("/wazuh/ossec.conf"))
        files = set(_agents(check_file(blueprint).files))
        assert files and {f.path for f in findings} == files
        assert all(f.ok and f.validator.tool == "xmllint" for f in findings), [f.output for f in findings]


def test_xmllint_rejects_a_broken_config(tmp_path):
    text = check_file(EXAMPLE).files["vms/vpn/wazuh/ossec.conf"].content.decode()
    broken = tmp_path / "ossec.conf"
    broken.write_text(text.replace("</protocol>", "</protocoll>"))
    [validator] = validators_for("vms/vpn/wazuh/ossec.conf")
    proc = subprocess.run([p.replace("{file}", str(broken)) for p in validator.command], capture_output=True, text=True)
    assert proc.returncode != 0
    # the message names the line, which provenance maps back to the blueprint
    line = text.splitlines().index("      <protocol>tcp</protocol>") + 1
    assert f"{broken}:{line}:" in proc.stderr


def test_install_path_is_the_agent_configuration():
    assert wazuh.INSTALL_PATH == "/var/ossec/etc/ossec.conf"
    comment = check_file(EXAMPLE).files["host/wazuh/ossec.conf"].content.decode().splitlines()[1]
    assert wazuh.INSTALL_PATH in comment and "root:wazuh 0640" in comment
