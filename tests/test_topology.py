"""The topology picture: topology.json says what the deployment is, topology.svg shows all of it.

The SVG is parsed as XML and every VM, network, NIC address, forward, the mirror and its IDS,
and every VPS site and tunnel is looked up by its id and its text compared with the blueprint.
Both validators (xmllint, rsvg-convert) run for real, on the examples and on a broken file.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from compiler.pipeline import check_file
from compiler.render import topology
from compiler.render._topology_svg import width
from compiler.verify import validators_for

from .conftest import FIXTURES, ROOT

EXAMPLE = ROOT / "blueprints" / "example.yaml"
VPS_FRONT = ROOT / "blueprints" / "vps-front.yaml"
NS = {"s": "http://www.w3.org/2000/svg"}


def files(blueprint: Path) -> dict[str, bytes]:
    return {p: o.content for p, o in check_file(blueprint).files.items()}


def parsed(blueprint: Path) -> tuple[dict, ET.Element]:
    out = files(blueprint)
    return json.loads(out[topology.JSON]), ET.fromstring(out[topology.SVG])


def by_id(root: ET.Element) -> dict[str, ET.Element]:
    return {e.get("id"): e for e in root.iter() if e.get("id")}


def texts(element: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in element.iter(f"{{{NS['s']}}}text")]


def test_example_topology_json():
    data, _ = parsed(EXAMPLE)
    host = data["host"]
    assert host["uplink"] == {"interface": "enp1s0f1", "address": "203.0.113.10/24", "gateway": "203.0.113.1"}
    assert [(p["port"], p["proto"]) for p in host["public_ports"]] == [
        (80, "tcp"), (443, "tcp"), (2222, "tcp"), (53201, "tcp"), (52439, "udp")]
    assert [(n["name"], n["mode"], n["bridge"], n["subnet"]) for n in data["networks"]] == [
        ("default", "nat", "virbr0", "192.168.122.0/24"), ("mirror", "mirror", "br1", None)]
    vms = {v["name"]: v for v in data["vms"]}
    assert {n["network"]: n["address"] for n in vms["onion"]["nics"]} == {"default": "192.168.122.50", "mirror": None}
    assert vms["nextcloud"]["install"] == {"method": "image", "from": "nextcloud"}
    assert vms["onion"]["install"] == {"method": "iso", "from": "securityonion-2.4.iso"}
    assert vms["vpn"]["install"] == {"method": "kickstart", "from": "rocky9"}
    assert data["mirror"] == {"interface": "enp1s0f1", "bridge": "br1", "network": "mirror", "listeners": ["onion"]}
    assert [(f["proto"], f["port"], f["address"], f["to_port"]) for f in data["forwards"]] == [
        ("tcp", 80, "192.168.122.5", 80), ("tcp", 443, "192.168.122.5", 443), ("udp", 52439, "192.168.122.150", 1194)]
    assert data["vps"] is None


def test_vps_front_topology_json():
    data, _ = parsed(VPS_FRONT)
    vps = data["vps"]
    assert vps["address"] == "198.51.100.20"
    assert [(p["port"], p["proto"]) for p in vps["public_ports"]] == [(80, "tcp"), (443, "tcp"), (53202, "tcp"), (1194, "udp")]
    assert [(s["host"], s["client"], s["this_host"], s["to"]) for s in vps["sites"]] == [
        ("cloud.example.org", "home1", True, {"vm": "nextcloud", "address": "192.168.122.5", "port": 443}),
        ("photos.example.org", "home2", False, None)]
    assert vps["tunnels"] == [
        {"client": "home1", "address": "172.28.0.10", "this_host": True, "interface": "tun-moat"},
        {"client": "home2", "address": "172.28.0.11", "this_host": False, "interface": None}]
    [fwd] = data["forwards"]
    assert [(i["interface"], i["sites"]) for i in fwd["ingress"]] == [("eno1", []), ("tun-moat", ["cloud.example.org"])]
    assert data["mirror"] is None


@pytest.mark.parametrize("blueprint", [EXAMPLE, VPS_FRONT], ids=["example", "vps-front"])
def test_the_svg_shows_everything_the_json_says(blueprint):
    data, root = parsed(blueprint)
    ids = by_id(root)
    assert root.tag == f"{{{NS['s']}}}svg"
    assert data["host"]["uplink"]["address"] in " ".join(texts(ids["host"]))
    for port in data["host"]["public_ports"]:
        forwarded = any((f["proto"], f["port"]) == (port["proto"], port["port"]) for f in data["forwards"])
        group = ids[f"fwd-{port['proto']}-{port['port']}" if forwarded else f"port-{port['proto']}-{port['port']}"]
        assert f"{port['port']}/{port['proto']}" in texts(group)
        if not forwarded:
            assert port["why"] in texts(group)
    for f in data["forwards"]:
        assert f"→ {f['address']}:{f['to_port']}" in texts(ids[f"fwd-{f['proto']}-{f['port']}"])
    for net in data["networks"]:
        label = texts(ids[f"net-{net['name']}"])[0]
        assert net["bridge"] in label and net["name"] in label and (net["subnet"] or "") in label
    for vm in data["vms"]:
        shown = texts(ids[f"vm-{vm['name']}"])
        assert shown[0] == vm["name"] and f"{vm['install']['method']}: {vm['install']['from']}" in shown
        for nic in vm["nics"]:
            [label] = texts(ids[f"nic-{vm['name']}-{nic['network']}"])
            assert label == (nic["address"] or "listening (no address)")
    if data["mirror"]:
        mirror = data["mirror"]
        lane = ids[f"net-{mirror['network']}"]
        assert "mirror" in lane.get("class").split()
        assert all(line.get("stroke-dasharray") for line in lane.iter(f"{{{NS['s']}}}line")), "the mirror lane is dashed"
        assert f"copy of every packet on {mirror['interface']}" in texts(lane)[0]
        assert "mirror" in ids
        for name in mirror["listeners"]:
            assert "ids" in ids[f"vm-{name}"].get("class").split()
            assert "IDS: listens on the mirror" in texts(ids[f"vm-{name}"])
    if data["vps"]:
        vps = data["vps"]
        assert f"VPS {vps['name']} · {vps['address']}" in texts(ids["vps"])
        for site in vps["sites"]:
            [line] = texts(ids[f"site-{site['host']}"])
            assert site["host"] in line and site["client"] in line
            if site["to"]:
                assert f"{site['to']['vm']} {site['to']['address']}:{site['to']['port']}" in line
        for t in vps["tunnels"]:
            shown = " ".join(texts(ids[f"tunnel-{t['client']}"]))
            assert t["client"] in shown and t["address"] in shown


def reversed_lists(text: str, *sections: str) -> str:
    """The blueprint with the items of the given top-level lists in reverse order."""
    def flip(m: re.Match) -> str:
        prefix, *items = re.split(r"(?m)^(?=  - )", m.group(2))
        return m.group(1) + ":\n" + prefix + "".join(i.rstrip("\n") + "\n" for i in reversed(items)) + "\n"
    return re.sub(rf"(?ms)^({'|'.join(sections)}):\n(.*?)(?=^\S|\Z)", flip, text)


def test_the_same_blueprint_gives_the_same_bytes(tmp_path):
    for blueprint in (EXAMPLE, VPS_FRONT):
        first, second = files(blueprint), files(blueprint)
        assert first[topology.SVG] == second[topology.SVG] and first[topology.JSON] == second[topology.JSON]
        # the blueprint's order changes nothing: networks, VMs, forwards and sites listed in reverse
        reordered = tmp_path / blueprint.name
        text = reversed_lists(blueprint.read_text(), "networks", "vms", "forwards")
        text = text.replace("    - { host: cloud.example.org, client: home1 }\n    - { host: photos.example.org, client: home2 }",
                            "    - { host: photos.example.org, client: home2 }\n    - { host: cloud.example.org, client: home1 }")
        assert text != blueprint.read_text()
        reordered.write_text(text)
        assert files(reordered)[topology.SVG] == first[topology.SVG]
        assert files(reordered)[topology.JSON] == first[topology.JSON]


def test_a_blueprint_without_forwards_mirror_or_vps_renders(tmp_path):
    bare = tmp_path / "bare.yaml"
    bare.write_text((FIXTURES / "base.yaml").read_text().replace("forwards:\n  - {port: 443, proto: tcp, to: web}\n",
                                                                 "forwards: []\n"))
    data, root = parsed(bare)
    assert data["forwards"] == [] and data["mirror"] is None and data["vps"] is None
    ids = by_id(root)
    assert {"host", "uplink", "vm-web", "net-lan", "nic-web-lan", "port-tcp-2201"} <= set(ids)
    assert not any(i.startswith(("fwd-", "site-", "tunnel-")) or i == "mirror" for i in ids)
    assert texts(ids["nic-web-lan"]) == ["192.168.10.5"]


def test_every_text_is_escaped(tmp_path):
    hostile = tmp_path / "hostile.yaml"
    odd = "a <b> & c </text><script> ]]> <!-- x"  # quotes are refused by the checks (unsafe-string)
    text = (FIXTURES / "base.yaml").read_text()
    text = text.replace("name: tiny\n", f"name: tiny\ndescription: {json.dumps(odd)}\n")
    hostile.write_text(text.replace("    cpus: 2\n", f"    description: {json.dumps(odd)}\n    cpus: 2\n"))
    svg = files(hostile)[topology.SVG]
    root = ET.fromstring(svg)  # well-formed
    assert odd in texts(by_id(root)["vm-web"])
    assert texts(by_id(root)["title"]) == [f"tiny — {odd}"]
    assert b"<script>" not in svg


@pytest.mark.parametrize("blueprint", [EXAMPLE, VPS_FRONT], ids=["example", "vps-front"])
def test_nothing_is_cut_off(blueprint):
    # text is monospaced (0.6 em an advance): every text stays inside the picture, and the text of a
    # VM, a port or the VPS inside that element's box
    _, root = parsed(blueprint)
    total = int(root.get("width"))
    for group in root.iter(f"{{{NS['s']}}}g"):
        boxes = list(group.iter(f"{{{NS['s']}}}rect"))
        for t in group.iter(f"{{{NS['s']}}}text"):
            x, end = int(t.get("x")), int(t.get("x")) + width("".join(t.itertext()), int(t.get("font-size")))
            assert 0 < x and end < total, "".join(t.itertext())
            if (group.get("id") or "").startswith(("vm-", "fwd-", "port-")) or group.get("id") == "vps":
                box = boxes[0]
                assert int(box.get("x")) < x and end <= int(box.get("x")) + int(box.get("width")), "".join(t.itertext())


# -- the real tools


def run(validator, file: Path) -> subprocess.CompletedProcess:
    return subprocess.run([p.replace("{file}", str(file)) for p in validator.command], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def test_validators_are_xmllint_and_rsvg_convert():
    assert [v.tool for v in validators_for(topology.SVG)] == ["xmllint", "rsvg-convert"]
    assert validators_for(topology.JSON) == []


@pytest.mark.parametrize("blueprint", [EXAMPLE, VPS_FRONT], ids=["example", "vps-front"])
def test_the_tools_accept_the_pictures(blueprint, tmp_path):
    svg = tmp_path / "topology.svg"
    svg.write_bytes(files(blueprint)[topology.SVG])
    for v in validators_for(topology.SVG):
        proc = run(v, svg)
        assert proc.returncode == 0, (v.tool, proc.stdout + proc.stderr)


def test_the_tools_reject_a_broken_picture(tmp_path):
    text = files(EXAMPLE)[topology.SVG].decode()
    broken = tmp_path / "topology.svg"
    broken.write_text(text.replace("</text>", "</txet>", 1))
    for v in validators_for(topology.SVG):
        proc = run(v, broken)
        assert proc.returncode not in (0, 69), (v.tool, proc.stdout + proc.stderr)
    # not SVG at all, though well-formed: librsvg refuses it
    other = tmp_path / "other.svg"
    other.write_text('<?xml version="1.0"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><p>hi</p></html>\n')
    [rsvg] = [v for v in validators_for(topology.SVG) if v.tool == "rsvg-convert"]
    assert run(rsvg, other).returncode not in (0, 69)


@pytest.mark.parametrize("blueprint", [EXAMPLE, VPS_FRONT], ids=["example", "vps-front"])
def test_the_png_has_the_svg_size(blueprint, tmp_path):
    assert shutil.which("rsvg-convert"), "tests/system/topology.debs installs librsvg2-bin"
    svg = tmp_path / "topology.svg"
    svg.write_bytes(files(blueprint)[topology.SVG])
    root = ET.fromstring(svg.read_bytes())
    png = tmp_path / "topology.png"
    subprocess.run(["rsvg-convert", "-o", str(png), str(svg)], check=True)
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")) == (
        int(root.get("width")), int(root.get("height")))


@pytest.mark.slow
def test_the_picture_of_1000_vms_passes_and_a_broken_one_of_that_size_does_not(tmp_path):
    """librsvg draws at most 32767 pixels a side; the picture of 1000 VMs is wider, and valid SVG
    (a browser shows it): the check draws it scaled and still refuses a broken one."""
    import sys
    sys.path.insert(0, str(ROOT / "bench"))
    import synthetic

    blueprint = tmp_path / "big.yaml"
    blueprint.write_text(synthetic.blueprint(1000))
    text = files(blueprint)[topology.SVG].decode()
    assert int(ET.fromstring(text).get("width")) > 32767
    [rsvg] = [v for v in validators_for(topology.SVG) if v.tool == "rsvg-convert"]
    svg = tmp_path / "topology.svg"
    svg.write_text(text)
    proc = run(rsvg, svg)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    svg.write_text(text.replace("</text>", "</txet>", 1))
    assert run(rsvg, svg).returncode not in (0, 69)
