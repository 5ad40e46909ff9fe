"""Derived values are deterministic and never collide."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from compiler.derive import derive, derived_mac, stable_uuid
from compiler.load import load_text
from compiler.model import structure
from compiler.pipeline import check_file
from compiler.schema import with_defaults

from .conftest import ROOT

MAC = re.compile(r"^52:54:00(:[0-9a-f]{2}){3}$")


def test_derived_mac_is_a_stable_hash_in_the_libvirt_prefix():
    mac = derived_mac("example", "onion", "mirror")
    assert MAC.match(mac)
    assert mac == derived_mac("example", "onion", "mirror")
    assert mac != derived_mac("example2", "onion", "mirror")
    assert mac != derived_mac("example", "onion", "default")
    assert int(mac[:2], 16) & 1 == 0  # unicast


def test_example_mirror_nic_gets_its_derived_mac():
    compiled = check_file(ROOT / "blueprints" / "example.yaml")
    onion = ET.fromstring(compiled.files["host/libvirt/domains/onion.xml"].content)
    macs = [m.get("address") for m in onion.iter("mac")]
    assert macs == ["52:54:00:af:a2:d7", derived_mac("example", "onion", "mirror")]


def test_derived_macs_avoid_explicit_and_each_other():
    wanted = derived_mac("t", "a", "lan")
    text = f"""
version: 1
name: t
users: [{{name: ops, ssh_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGGYoGgelGlvc01Uok42rUekwV8r3Hc+IOAJ5gKyQNKh"]}}]
host: {{name: h, domain: example.com, cpus: 4, memory: 16GiB, disk: {{device: sda, size: 100GiB}},
        uplink: {{interface: eth0, address: 203.0.113.2/24, gateway: 203.0.113.1}},
        pools: [{{name: images, type: logical}}]}}
networks: [{{name: lan, mode: nat, bridge: virbr0, subnet: 10.0.0.0/24}}]
vms:
  - {{name: a, cpus: 1, memory: 1GiB, os_disk: {{size: 1GiB}}, install: {{method: image, image: x}},
      nics: [{{network: lan, address: 10.0.0.2}}]}}
  - {{name: b, cpus: 1, memory: 1GiB, os_disk: {{size: 1GiB}}, install: {{method: image, image: x}},
      nics: [{{network: lan, address: 10.0.0.3, mac: "{wanted}"}}]}}
"""
    plan = derive(structure(with_defaults(load_text(text, "t.yaml").data)))
    macs = {rv.name: rv.nics[0].mac for rv in plan.vms}
    assert macs["b"] == wanted
    assert macs["a"] == derived_mac("t", "a", "lan", 1)  # bumped past the explicit one
    assert MAC.match(macs["a"])


def test_domain_uuids_are_stable_and_distinct():
    assert stable_uuid("moat-domain", "x", "a") == stable_uuid("moat-domain", "x", "a")
    assert stable_uuid("moat-domain", "x", "a") != stable_uuid("moat-domain", "x", "b")
    compiled = check_file(ROOT / "blueprints" / "example.yaml")
    uuids = {ET.fromstring(f.content).find("uuid").text for n, f in compiled.files.items() if "/domains/" in n}
    assert len(uuids) == 3
