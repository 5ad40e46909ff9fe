"""Property tests for the compiler (Hypothesis).

a. every accepted blueprint is conflict-free according to an independent oracle (below), and
   for random "maybe-conflicting" blueprints the compiler accepts iff the oracle finds nothing;
b. every injected conflict is reported with its rule id, as an error;
c. the compiler raises nothing but MoatError, whatever the input;
d. building twice gives the same store hash, store path and bytes;
e. reordering VMs, forwards, networks (and other unordered lists) changes no generated file;
   derived MACs are 52:54:00:xx:xx:xx, unique, consistent between files and stable.

The oracle restates the rules from docs/blueprint.md and the schema in plain Python with
`ipaddress`; it deliberately does not import compiler.checks.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, event, given, note, settings
from hypothesis import strategies as st

from compiler.diagnostics import MoatError, format_diagnostic
from compiler.load import load_text
from compiler.pipeline import build_file, compile_source
from compiler.schema import validate as validate_schema

from .conftest import FIXTURES
from . import strategies as S

SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
# Shrinking a failing blueprint can take minutes; it is opt-in (MOAT_SHRINK=1) so that a run with
# failures stays about as fast as a green one. Minimal repros of known bugs are in REGRESSIONS.
PHASES = tuple(Phase) if os.environ.get("MOAT_SHRINK") else tuple(p for p in Phase if p != Phase.shrink)


# MOAT_PROPERTY_SCALE=20 runs twenty times as many examples (a soak run; the default keeps the file ~1 min).
SCALE = float(os.environ.get("MOAT_PROPERTY_SCALE", "1"))


def budget(n: int) -> settings:
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, suppress_health_check=SLOW, phases=PHASES)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def to_text(bp: dict) -> str:
    text = S.dump_yaml(bp)
    note(text)
    return text


def compile_text(text: str, name: str = "prop.yaml"):
    return compile_source(load_text(text, name))


def compile_data(bp: dict):
    """Dump to YAML, check that the YAML means the same data, and compile."""
    text = to_text(bp)
    assert load_text(text, "roundtrip").data == bp, "generator bug: YAML dump does not load back to the same data"
    return compile_text(text)


def error_rules(err: MoatError) -> set[str]:
    return {d.rule for d in err.diagnostics if d.is_error}


def explain(err: MoatError) -> str:
    return "\n".join(format_diagnostic(d, err.source) for d in err.diagnostics)


def compile_or_moat_error(text: str) -> Any:
    """Compile; MoatError (with at least one error) is fine, any other exception fails the test."""
    try:
        return compile_text(text)
    except MoatError as err:
        assert err.diagnostics and any(d.is_error for d in err.diagnostics), "MoatError without an error"
        return None


# --------------------------------------------------------------------------------------------
# the independent oracle
# --------------------------------------------------------------------------------------------

# control characters (C0, DEL, C1), line/paragraph separators, surrogates, noncharacters, quotes,
# backslash, backtick, dollar: what could break out of a quoted or line-based config
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff\"'`\\\\$]")
MIB = {"MiB": 1, "GiB": 1024, "TiB": 1024 * 1024}


def size(text: str) -> int:
    m = re.fullmatch(r"([0-9]+)(MiB|GiB|TiB)", text)
    assert m, text
    return int(m.group(1)) * MIB[m.group(2)]


def has_unsafe_string(data: Any) -> bool:
    if isinstance(data, dict):
        return any(UNSAFE.search(k) or has_unsafe_string(v) for k, v in data.items())
    if isinstance(data, list):
        return any(has_unsafe_string(v) for v in data)
    return isinstance(data, str) and bool(UNSAFE.search(data))


def repeats(values) -> bool:
    values = list(values)
    return len(values) != len(set(values))


def host_address_problem(address: IPv4Address, subnet: IPv4Network, gateway: IPv4Address | None) -> str | None:
    """Why `address` cannot be given to a machine on `subnet` (whose host/server has `gateway`)."""
    if address not in subnet:
        return "ip-outside-subnet"
    if address in (subnet.network_address, subnet.broadcast_address) or address == gateway:
        return "ip-reserved"
    return None


def oracle(bp: dict) -> set[str]:
    """Rule ids of every conflict in a SCHEMA-VALID blueprint, from the documented rules alone.

    Defaults (schema): sshd 22, reserved 4GiB / 1 CPU, efi 200MiB, boot 1GiB, root 30GiB,
    swap 8GiB, disk pool `images`, gateway = first address, OpenVPN 1194/udp, certbot 8888,
    OpenVPN server = first tunnel address. HAProxy owns 80/443 tcp on the VPS.
    """
    # unsafe strings are rejected while validating, before any semantic rule is looked at
    if has_unsafe_string(bp):
        return {"unsafe-string"}
    found: set[str] = set()
    host = bp["host"]
    vms = bp.get("vms", [])
    networks = bp["networks"]
    forwards = bp.get("forwards", [])
    vps = bp.get("vps")
    pools = {p["name"]: p for p in host.get("pools", [])}  # with duplicates, the last one counts
    by_network = {n["name"]: n for n in networks}
    by_vm = {v["name"]: v for v in vms}
    user_names = {u["name"] for u in bp["users"]}
    images = bp.get("images", [])

    # duplicate-name
    scopes = [
        [u["name"] for u in bp["users"]], [n["name"] for n in networks], [n["bridge"] for n in networks],
        ["host"] + [v["name"] for v in vms], [p["name"] for p in host.get("pools", [])], [i["name"] for i in images],
    ]
    for vm in vms:
        scopes.append([d["name"] for d in vm.get("data_disks", [])])
        scopes.append([n["network"] for n in vm["nics"]])
    # volumes are named VM-os and VM-DISK where their pool keeps them: every logical pool is the one
    # volume group, a dir pool its directory
    def storage(pool: str) -> Any:
        if pool not in pools:
            return pool
        return ("vg",) if pools[pool]["type"] == "logical" else ("dir", pools[pool]["path"].rstrip("/") or "/")

    scopes.append([(storage(d.get("pool", "images")), f"{vm['name']}-{name}") for vm in vms
                   for name, d in [("os", vm["os_disk"])] + [(d["name"], d) for d in vm.get("data_disks", [])]])
    if vps:
        scopes.append([c["name"] for c in vps["openvpn"]["clients"]])
        scopes.append([s["host"] for s in vps["sites"]])
    if any(repeats(scope) for scope in scopes):
        found.add("duplicate-name")

    # unknown-reference / reference-kind
    def on_nat(vm: dict) -> bool:  # a NIC on an unknown network is reported as unknown-reference instead
        return any(n["network"] not in by_network or by_network[n["network"]]["mode"] == "nat" for n in vm["nics"])

    refs_ok = True
    for owner in (host, vps or {}, *vms):
        refs_ok &= all(u in user_names for u in owner.get("users", []))
    for vm in vms:
        refs_ok &= all(d.get("pool", "images") in pools for d in [vm["os_disk"], *vm.get("data_disks", [])])
        refs_ok &= all(n["network"] in by_network for n in vm["nics"])
        refs_ok &= vm["install"]["method"] != "iso" or "ISOs" in pools
        refs_ok &= vm["install"]["method"] != "image" or vm["install"]["image"] in {i["name"] for i in images}
    for image in images:  # only moat's own elements (images/)
        refs_ok &= all(e in S.MOAT_ELEMENTS for e in image.get("elements", []))
        if image["release"] not in S.RELEASES[image["distribution"]]:
            found.add("image-release")
    for fwd in forwards:
        target = by_vm.get(fwd["to"])
        refs_ok &= target is not None
        if target and not on_nat(target):
            found.add("reference-kind")  # forwards go to the VM's address on its first nat network
    if "mirror" in bp:
        net = by_network.get(bp["mirror"]["network"])
        refs_ok &= net is not None
        if net and net["mode"] != "mirror":
            found.add("reference-kind")
    wazuh = bp.get("monitoring", {}).get("wazuh")
    if wazuh:
        refs_ok &= wazuh["manager"] in by_vm
        if wazuh["manager"] in by_vm and not on_nat(by_vm[wazuh["manager"]]):
            found.add("reference-kind")  # agents report to the manager's address on a nat network
        refs_ok &= all(a == "host" or a in by_vm for a in wazuh.get("agents", []))
    if vps:
        clients = {c["name"] for c in vps["openvpn"]["clients"]}
        refs_ok &= vps["client"] in clients and all(s["client"] in clients for s in vps["sites"])
    if not refs_ok:
        found.add("unknown-reference")
    if vps and vps["client"] in {c["name"] for c in vps["openvpn"]["clients"]}:
        # the sites of this host need a tcp forward on their port (default 443)
        tcp = {f["port"] for f in forwards if f["proto"] == "tcp"}
        if any(s["client"] == vps["client"] and s.get("port", 443) not in tcp for s in vps["sites"]):
            found.add("site-unforwarded")

    # addresses
    uplink = IPv4Interface(host["uplink"]["address"])
    subnets = [uplink.network]
    if IPv4Address(host["uplink"]["gateway"]) not in uplink.network:
        found.add("ip-outside-subnet")
    gateways: dict[str, IPv4Address] = {}
    for net in networks:
        if net["mode"] != "nat":
            continue
        subnet = IPv4Network(net["subnet"])
        subnets.append(subnet)
        gw = IPv4Address(net["gateway"]) if "gateway" in net else subnet.network_address + 1
        gateways[net["name"]] = gw
        if "gateway" in net and (problem := host_address_problem(gw, subnet, None)):
            found.add(problem)
        if "dhcp" in net:
            start, end = IPv4Address(net["dhcp"]["start"]), IPv4Address(net["dhcp"]["end"])
            problems = {p for p in (host_address_problem(a, subnet, gw) for a in (start, end)) if p}
            found |= problems
            if not problems and (start > end or start <= gw <= end):
                found.add("dhcp-range")
    claims: Counter = Counter()
    for vm in vms:
        for nic in vm["nics"]:
            net = by_network.get(nic["network"])
            if net is None:
                continue
            if net["mode"] == "mirror":
                if "address" in nic:
                    found.add("address-not-allowed")
                continue
            if "address" not in nic:
                found.add("address-required")
                continue
            address, subnet = IPv4Address(nic["address"]), IPv4Network(net["subnet"])
            problem = host_address_problem(address, subnet, gateways[net["name"]])
            if problem:
                found.add(problem)
            elif "dhcp" in net and IPv4Address(net["dhcp"]["start"]) <= address <= IPv4Address(net["dhcp"]["end"]):
                found.add("ip-in-dhcp-range")
            claims[(net["name"], address)] += 1
    if vps:
        tunnel = IPv4Network(vps["openvpn"]["subnet"])
        subnets.append(tunnel)
        for client in vps["openvpn"]["clients"]:
            address = IPv4Address(client["address"])
            if problem := host_address_problem(address, tunnel, tunnel.network_address + 1):
                found.add(problem)
            claims[("vpn tunnel", address)] += 1
    if any(n > 1 for n in claims.values()):
        found.add("ip-duplicate")
    if any(a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1:]):
        found.add("subnet-overlap")
    macs = [n["mac"].lower() for vm in vms for n in vm["nics"] if "mac" in n]
    if any(int(m.split(":")[0], 16) & 1 for m in macs):
        found.add("mac-multicast")
    if repeats(macs):
        found.add("mac-duplicate")

    # ports: one owner per public (port, proto), on the host and on the VPS
    host_claims = [(host.get("sshd", {}).get("port", 22), "tcp")]
    unlock = host["disk"].get("encryption", {}).get("unlock_port", 2222) if "encryption" in host["disk"] else None
    if unlock is not None and unlock != host_claims[0][0]:  # the initramfs's sshd; the host's own port is fine
        host_claims.append((unlock, "tcp"))
    host_claims += [(f["port"], f["proto"]) for f in forwards]
    host_claims += [(a["port"], a["proto"]) for a in bp.get("firewall", {}).get("allow", [])]
    if repeats(host_claims):
        found.add("port-collision")
    if vps:
        vps_claims = [(80, "tcp"), (443, "tcp"), (vps.get("sshd", {}).get("port", 22), "tcp"),
                      (vps["openvpn"].get("port", 1194), vps["openvpn"].get("proto", "udp")),
                      (vps.get("acme", {}).get("port", 8888), "tcp")]
        if repeats(vps_claims):
            found.add("port-collision")

    # resources
    reserved = host.get("reserved", {})
    if sum(size(v["memory"]) for v in vms) + size(reserved.get("memory", "4GiB")) > size(host["memory"]):
        found.add("overcommit-memory")
    threads = host["cpus"] - reserved.get("cpus", 1)  # generated blueprints keep this >= 1
    if any(v["cpus"] > threads for v in vms):
        found.add("overcommit-cpu")
    disk = host["disk"]
    volume_group = size(disk["size"]) - sum(size(disk.get(k, d)) for k, d in
                                             (("efi", "200MiB"), ("boot", "1GiB"), ("root", "30GiB"), ("swap", "8GiB")))
    if volume_group <= 0:
        found.add("disk-layout")
    logical = sum(size(d["size"]) for v in vms for d in [v["os_disk"], *v.get("data_disks", [])]
                  if pools.get(d.get("pool", "images"), {}).get("type") == "logical")
    if logical > max(volume_group, 0):
        found.add("overcommit-disk")
    # seed-pool: VMs with a seed (image, kickstart) or an installer ISO need the pool named ISOs; a
    # declared one is a dir pool; without one, moat's default takes /ISOs, which no other may use
    if any(v["install"]["method"] in ("image", "kickstart") or v["install"].get("iso") for v in vms):
        declared = next((p for p in host.get("pools", []) if p["name"] == "ISOs"), None)
        if declared is not None and declared["type"] != "dir":
            found.add("seed-pool")
        if declared is None and any(p["type"] == "dir" and p.get("path", "").rstrip("/") == "/ISOs"
                                    for p in host.get("pools", [])):
            found.add("seed-pool")
    return found | class_rules(bp)


# the classes of issue 9 (lock-out, self-reference, host-identity, reserved-range, mount-collision),
# restated from their documentation in compiler/checks/*.py
RESERVED_BLOCKS = [IPv4Network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4")]
NEVER_A_SOURCE = [IPv4Network(n) for n in ("127.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4")]
SYSTEM_DIRS = {"/", "/usr", "/var", "/home", "/root", "/bin", "/sbin", "/lib", "/lib64"}
SYSTEM_TREES = ("/boot", "/etc", "/proc", "/sys", "/dev", "/run")


def in_reserved(value: IPv4Address | IPv4Network) -> bool:
    net = IPv4Network(value)
    return any(net.overlaps(block) for block in RESERVED_BLOCKS)


def system_path(path: str) -> bool:
    path = path.rstrip("/") or "/"
    return path in SYSTEM_DIRS or any(path == t or path.startswith(t + "/") for t in SYSTEM_TREES)


def nat_gateway(net: dict) -> IPv4Address:
    return IPv4Address(net["gateway"]) if "gateway" in net else IPv4Network(net["subnet"]).network_address + 1


def class_rules(bp: dict) -> set[str]:
    found: set[str] = set()
    host, vps, vms, networks = bp["host"], bp.get("vps"), bp.get("vms", []), bp["networks"]
    uplink = IPv4Interface(host["uplink"]["address"])
    gateway = IPv4Address(host["uplink"]["gateway"])
    dns = [IPv4Address(a) for a in host["uplink"].get("dns", [])]
    nats = [n for n in networks if n["mode"] == "nat"]

    # lock-out: an explicit empty users list on the host or the VPS (no account has a password)
    if any(o.get("users") == [] for o in [host] + ([vps] if vps else [])):
        found.add("lock-out")

    # self-reference
    mirror = bp.get("mirror")
    target = next((n for n in networks if mirror and n["name"] == mirror["network"]), None)
    if mirror and "interface" in mirror and target and target["mode"] == "mirror" and \
            target["bridge"] == mirror["interface"]:
        found.add("self-reference")
    if gateway == uplink.ip:
        found.add("self-reference")
    own = {uplink.ip} | {nat_gateway(n) for n in nats if IPv4Network(n["subnet"]).prefixlen <= 30}
    if any(a in own for a in dns):
        found.add("self-reference")
    if vps and (IPv4Address(vps["address"]) in IPv4Network(vps["openvpn"]["subnet"])
                or IPv4Address(vps["address"]) == uplink.ip):
        found.add("self-reference")
    wazuh = bp.get("monitoring", {}).get("wazuh")
    if wazuh and wazuh["manager"] in wazuh.get("agents", []):
        found.add("self-reference")

    # host-identity
    machine_names = {host["name"]} | ({vps["name"]} if vps else set())
    if any(v["name"] in machine_names for v in vms) or (vps and vps["name"] == host["name"]):
        found.add("host-identity")
    interfaces = {host["uplink"]["interface"], "lo"} | ({"tun-moat"} if vps else set())
    if any(n["bridge"] in interfaces for n in networks):
        found.add("host-identity")
    if vps:
        fqdn = f"{host['name']}.{host['domain']}".lower().rstrip(".")
        if any(s["host"].lower().rstrip(".") == fqdn for s in vps["sites"]):
            found.add("host-identity")
        if any(IPv4Address(vps["address"]) in IPv4Network(n["subnet"]) for n in networks if "subnet" in n):
            found.add("host-identity")

    # reserved-range
    standalone = dns + ([gateway] if gateway not in uplink.network else [])
    subnets = [uplink.network] + [IPv4Network(n["subnet"]) for n in networks if "subnet" in n]
    if vps:
        standalone.append(IPv4Address(vps["address"]))
        subnets.append(IPv4Network(vps["openvpn"]["subnet"]))
    if any(in_reserved(v) for v in standalone + subnets):
        found.add("reserved-range")
    sources = [IPv4Network(a["from"]) for a in bp.get("firewall", {}).get("allow", []) if "from" in a]
    if any(src.subnet_of(block) for src in sources for block in NEVER_A_SOURCE):
        found.add("reserved-range")

    # mount-collision
    for vm in vms:
        mounts = [d["mount"] for d in vm.get("data_disks", [])]
        if any(system_path(m) for m in mounts) or repeats(m.rstrip("/") or "/" for m in mounts if not system_path(m)):
            found.add("mount-collision")
    paths = [p["path"] for p in host.get("pools", []) if p["type"] == "dir"]
    if any(system_path(p) for p in paths) or repeats(p.rstrip("/") or "/" for p in paths if not system_path(p)):
        found.add("mount-collision")
    return found


def oracle_warnings(bp: dict) -> set[str]:
    """Rule ids of the warnings lock-out and unused (legal blueprints that are probably wrong)."""
    found: set[str] = set()
    host, vps, vms, users = bp["host"], bp.get("vps"), bp.get("vms", []), bp["users"]
    by_name = {u["name"]: u for u in users}
    owners = [host] + ([vps] if vps else []) + [v for v in vms if v["install"]["method"] != "iso"]
    for owner in owners:
        names = owner.get("users", list(by_name))
        if names == [] and owner not in (host, vps):  # a sealed VM: the host still reaches its disk
            found.add("lock-out")
        if names and all(n in by_name for n in names) and not any(by_name[n].get("sudo", True) for n in names):
            found.add("lock-out")
    joined = {n["network"] for v in vms for n in v["nics"]}
    mirrored = bp.get("mirror", {}).get("network")
    for net in bp["networks"]:
        if net["name"] not in joined or (net["mode"] == "mirror" and net["name"] != mirrored):
            found.add("unused")
    disks = {d.get("pool", "images") for v in vms for d in [v["os_disk"], *v.get("data_disks", [])]}
    if any(p["name"] not in disks and not (p["name"] == "ISOs" and vms) for p in host.get("pools", [])):
        found.add("unused")
    lists = [host.get("users")] + [v.get("users") for v in vms] + ([vps.get("users")] if vps else [])
    if all(names is not None for names in lists) and set(by_name) - {n for names in lists for n in names}:
        found.add("unused")
    if vps and {c["name"] for c in vps["openvpn"]["clients"]} - {s["client"] for s in vps["sites"]} - {vps["client"]}:
        found.add("unused")
    installed = {v["install"]["image"] for v in vms if v["install"]["method"] == "image"}
    if {i["name"] for i in bp.get("images", [])} - installed:
        found.add("unused")
    return found


def total_vcpus_overcommitted(bp: dict) -> bool:
    return sum(v["cpus"] for v in bp["vms"]) > bp["host"]["cpus"] - bp["host"].get("reserved", {}).get("cpus", 1)


# --------------------------------------------------------------------------------------------
# a. accepted blueprints are conflict-free; accepts iff the oracle finds no conflict
# --------------------------------------------------------------------------------------------


@budget(40)
@given(S.blueprints())
def test_valid_blueprints_compile_and_are_conflict_free(bp):
    assert oracle(bp) == set(), "generator bug: the oracle finds a conflict in a 'valid' blueprint"
    try:
        compiled = compile_data(bp)
    except MoatError as err:
        pytest.fail(f"a valid blueprint was rejected:\n{explain(err)}")
    assert compiled.files
    assert all(not d.is_error for d in compiled.warnings)
    # the total vCPU count may exceed the host threads: that is a warning, never an error
    cpu_warning = any(d.rule == "overcommit-cpu" for d in compiled.warnings)
    assert cpu_warning == total_vcpus_overcommitted(bp)
    assert {d.rule for d in compiled.warnings} - {"overcommit-cpu", "overcommit-disk"} == oracle_warnings(bp)


@budget(60)
@given(S.maybe_conflicting())
def test_compiler_accepts_iff_oracle_is_conflict_free(bp):
    expected = oracle(bp)
    event("conflicting" if expected else "conflict-free")
    try:
        compiled = compile_data(bp)
    except MoatError as err:
        got = error_rules(err)
        note(explain(err))
        assert expected, f"compiler rejected a blueprint the oracle finds conflict-free: {sorted(got)}"
        assert got == expected
    else:
        assert not expected, f"compiler accepted a blueprint with conflicts: {sorted(expected)}"
        assert compiled.files


# --------------------------------------------------------------------------------------------
# b. every injected conflict is reported with its rule id, as an error
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", S.CONFLICT_RULES)
@budget(10)
@given(data=st.data())
def test_injected_conflict_is_reported(rule, data):
    _valid, bad, variant = data.draw(S.conflicting(rule))
    event(variant)
    note(f"variant: {variant}")
    assert oracle(bad) == {rule}, "mutator bug: it did not inject exactly one conflict class"
    with pytest.raises(MoatError) as info:
        compile_data(bad)
    note(explain(info.value))
    got = error_rules(info.value)
    assert rule in got
    assert got == {rule}


def test_every_conflict_class_has_a_mutator():
    """Each conflict class of the issue has a mutator (port-collision with all three kinds of clash)."""
    wanted = {"port-collision", "ip-duplicate", "ip-outside-subnet", "ip-reserved", "ip-in-dhcp-range",
              "subnet-overlap", "mac-duplicate", "mac-multicast", "duplicate-name", "unknown-reference",
              "overcommit-memory", "overcommit-disk", "overcommit-cpu", "unsafe-string",
              # issue 9's classes
              "lock-out", "self-reference", "host-identity", "reserved-range", "mount-collision",
              # issue 10's golden images
              "image-release"}
    assert wanted == set(S.CONFLICT_RULES)
    assert {"duplicate-forward", "forward-on-sshd", "vps-clash"} <= set(S.MUTATORS["port-collision"])


# --------------------------------------------------------------------------------------------
# b2. collisions: any two names, addresses, subnets, ports or paths made equal, or a reference
#     pointed at its owner: rejected with located errors exactly as the oracle says, or fine
# --------------------------------------------------------------------------------------------


def schema_valid(bp: dict) -> bool:
    return not any(d.is_error for d in validate_schema(bp))


@budget(80)
@given(S.collided())
def test_collisions_are_reported_where_written_or_provably_fine(case):
    bp, done = case
    note(f"edits: {done}")
    assume(schema_valid(bp))  # e.g. a pool name copied into a VM name: the schema's rules, not these
    expected = oracle(bp)
    event("rejected" if expected else "fine")
    try:
        compiled = compile_data(bp)
    except MoatError as err:
        note(explain(err))
        for d in err.diagnostics:
            assert d.path and err.source.locate(d.path) != (1, 1), f"{d.rule} is not located: {d.path}"
            assert d.hint, f"{d.rule} has no hint"
        assert error_rules(err) == expected
    else:
        assert not expected, f"compiler accepted a collision the oracle calls broken: {sorted(expected)}"
        assert compiled.files


# --------------------------------------------------------------------------------------------
# c. nothing but MoatError, for any input
# --------------------------------------------------------------------------------------------


@budget(300)
@given(S.yaml_ish_text)
def test_arbitrary_text_raises_only_moat_error(text):
    compile_or_moat_error(text)


@budget(100)
@given(st.one_of(S.json_like(), st.fixed_dictionaries({}, optional={k: S.json_like() for k in (
    "version", "name", "users", "host", "networks", "vms", "forwards", "firewall", "mirror", "monitoring", "vps")})))
def test_arbitrary_data_raises_only_moat_error(data):
    compile_or_moat_error(to_text(data))


@budget(55)
@given(S.structurally_mutated())
def test_mutated_blueprints_raise_only_moat_error(bp):
    compile_or_moat_error(to_text(bp))


@budget(50)
@given(S.text_mutated())
def test_mutated_yaml_text_raises_only_moat_error(text):
    note(text)
    compile_or_moat_error(text)


@budget(25)
@given(bp=S.blueprints(max_vms=3), data=st.data())
def test_any_data_disks_raise_only_moat_error(bp, data):
    """Data disks of any (schema-valid) name and number: a bundle or a MoatError, nothing else."""
    vm = data.draw(st.sampled_from(bp["vms"]))
    disk_name = st.one_of(st.sampled_from(["os", "data", "a-b"]), S.names)
    disks = data.draw(st.lists(disk_name, max_size=30, unique=True))
    if data.draw(st.booleans()):
        disks = [f"d{i}" for i in range(data.draw(st.integers(20, 30)))]
    pool = vm["os_disk"].get("pool", "images")
    vm["data_disks"] = [{"name": d, "size": "1MiB", "pool": pool, "mount": f"/m{i}"} for i, d in enumerate(disks)]
    bp["host"]["disk"]["size"] = f"{S.parse_size(bp['host']['disk']['size']) + len(disks)}MiB"
    other = [v for v in bp["vms"] if v is not vm]
    # sometimes a second VM named after the first's volumes (VM `a` disk `b-c` vs VM `a-b` disk `c`)
    if other and disks and data.draw(st.booleans()):
        victim = data.draw(st.sampled_from(disks))
        if "-" in victim:
            renamed = f"{vm['name']}-{victim.split('-', 1)[0]}"
            refs = other[0]["name"]
            other[0]["name"] = renamed
            for fwd in bp.get("forwards", []):
                fwd["to"] = renamed if fwd["to"] == refs else fwd["to"]
    compile_or_moat_error(to_text(bp))


@budget(30)
@given(bp=S.blueprints(max_vms=2),
       text=st.lists(st.one_of(st.sampled_from(S.ODD_CHARS), st.characters(blacklist_characters=S.UNSAFE_CHARS)),
                     min_size=1, max_size=30).map("".join))
def test_any_description_gives_well_formed_xml(bp, text):
    """A description the compiler accepts must come out as well-formed XML (or be rejected)."""
    bp["vms"][0]["description"] = text
    compiled = compile_or_moat_error(to_text(bp))
    if compiled is not None:
        for path, art in compiled.files.items():
            if path.endswith(".xml"):
                ET.fromstring(art.content)


def _base() -> str:
    return (FIXTURES / "base.yaml").read_text()


def _edit(old: str, new: str) -> str:
    text = _base()
    assert old in text, f"tests/fixtures/base.yaml no longer contains {old!r}"
    return text.replace(old, new, 1)


VPS = """vps:
  name: front
  address: 198.51.100.20
  openvpn:
    subnet: {subnet}
    clients: [{{name: home1, address: {client}}}]
  client: home1
  sites: [{{host: cloud.example.org, client: home1}}]
"""

# Minimal inputs that made the compiler raise something other than MoatError. Each must give a
# bundle (whose XML is well-formed) or a MoatError. Built lazily from tests/fixtures/base.yaml.
REGRESSIONS = {
    "yaml-invalid-timestamp": lambda: "a: 2020-13-45\n",
    "yaml-year-zero-timestamp": lambda: "a: 0000-05-10\n",
    "yaml-hour-24-timestamp": lambda: "a: 2001-02-03 24:00:00\n",
    "yaml-merge-key": lambda: "a: &x {b: 1}\nc:\n  <<: *x\n",
    "yaml-deep-nesting": lambda: "[" * 500 + "]" * 500 + "\n",
    "yaml-omap": lambda: "!!omap [a: 1]\n",
    "yaml-omap-on-scalar": lambda: "!!omap 1\n",
    "yaml-int-tag": lambda: "version: !!int x\n",
    "yaml-bool-tag": lambda: "version: !!bool z\n",
    "yaml-str-tag-on-list": lambda: "name: !!str [a]\n",
    "yaml-huge-integer": lambda: "version: " + "9" * 5000 + "\n",
    "subnet-255.255.255.255/32": lambda: _edit("192.168.10.0/24", "255.255.255.255/32"),
    "nic-outside-0.0.0.0/32": lambda: _edit("192.168.10.0/24", "0.0.0.0/32"),
    "vpn-tunnel-255.255.255.255/32": lambda: _base() + VPS.format(subnet="255.255.255.255/32",
                                                                 client="255.255.255.255"),
    "data-disk-named-os": lambda: _edit("os_disk: {size: 20GiB}",
                                        "os_disk: {size: 20GiB}\n    data_disks: [{name: os, size: 1GiB, mount: /srv}]"),
    "26-data-disks": lambda: _edit("os_disk: {size: 20GiB}", "os_disk: {size: 20GiB}\n    data_disks: ["
                                   + ", ".join(f"{{name: d{i}, size: 1GiB, mount: /d{i}}}" for i in range(26)) + "]"),
    "description-lone-surrogate": lambda: _edit("    cpus: 2\n", '    description: "a\\ud800b"\n    cpus: 2\n'),
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression_inputs_raise_only_moat_error(name):
    compiled = compile_or_moat_error(REGRESSIONS[name]())
    if compiled is not None:
        for path, art in compiled.files.items():
            if path.endswith(".xml"):
                ET.fromstring(art.content)


def test_regression_noncharacter_description_renders_well_formed_xml():
    """U+FFFE passes the unsafe-string rule; it must then not end up raw in an XML file."""
    compiled = compile_or_moat_error(_edit("    cpus: 2\n", '    description: "a\\uFFFEb"\n    cpus: 2\n'))
    if compiled is not None:
        ET.fromstring(compiled.files["host/libvirt/domains/web.xml"].content)


# --------------------------------------------------------------------------------------------
# d. deterministic builds
# --------------------------------------------------------------------------------------------


@budget(15)
@given(S.blueprints(max_vms=5))
def test_compiling_twice_gives_the_same_digest(bp):
    text = to_text(bp)
    first, second = compile_text(text), compile_text(text)
    assert first.digest == second.digest
    assert first.meta == second.meta
    assert {p: a.content for p, a in first.files.items()} == {p: a.content for p, a in second.files.items()}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _remove(path: str) -> None:
    for dirpath, _dirs, _files in os.walk(path):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(path, ignore_errors=True)


@budget(5)
@given(S.blueprints(max_vms=4))
def test_building_twice_gives_the_same_store_path_and_bytes(bp):
    work = tempfile.mkdtemp(prefix="moat-prop-")
    try:
        source = Path(work) / "bp.yaml"
        source.write_text(to_text(bp))
        one, stored_one = build_file(source, Path(work) / "out1", tools=False)
        two, stored_two = build_file(source, Path(work) / "out2", tools=False)
        assert one.digest == two.digest
        assert stored_one.path.name == stored_two.path.name
        assert stored_one.path.name.startswith(one.digest)
        assert _tree(stored_one.path) == _tree(stored_two.path)
        again, stored_again = build_file(source, Path(work) / "out1", tools=False)
        assert stored_again.path == stored_one.path and not stored_again.created
    finally:
        _remove(work)


# --------------------------------------------------------------------------------------------
# e. order does not matter; derived MACs
# --------------------------------------------------------------------------------------------


def _rendered(compiled) -> dict[str, bytes]:
    return {p: a.content for p, a in compiled.files.items() if p != "blueprint.yaml"}


@budget(20)
@given(bp=S.blueprints(max_vms=6), data=st.data())
def test_reordering_lists_changes_no_generated_file(bp, data):
    shuffled = copy.deepcopy(bp)
    for key in ("vms", "forwards", "networks", "users", "images"):
        if shuffled.get(key):
            shuffled[key] = data.draw(st.permutations(shuffled[key]), label=key)
    shuffled["host"]["pools"] = data.draw(st.permutations(shuffled["host"]["pools"]), label="pools")
    if shuffled.get("firewall", {}).get("allow"):
        shuffled["firewall"]["allow"] = data.draw(st.permutations(shuffled["firewall"]["allow"]), label="allow")
    if "vps" in shuffled:
        vpn = shuffled["vps"]["openvpn"]
        vpn["clients"] = data.draw(st.permutations(vpn["clients"]), label="clients")
        shuffled["vps"]["sites"] = data.draw(st.permutations(shuffled["vps"]["sites"]), label="sites")
    assert _rendered(compile_data(bp)) == _rendered(compile_data(shuffled))


MAC_RE = re.compile(r"^52:54:00(:[0-9a-f]{2}){3}$")


def _macs(compiled) -> dict[tuple[str, str], str]:
    """(VM, network) -> MAC, from the domain XML files; also checks the networks' static leases."""
    macs: dict[tuple[str, str], str] = {}
    leases: dict[tuple[str, str], tuple[str, str]] = {}
    for path, art in compiled.files.items():
        if path.startswith("host/libvirt/domains/"):
            dom = ET.fromstring(art.content)
            vm = dom.findtext("name")
            for iface in dom.iter("interface"):
                macs[(vm, iface.find("source").get("network"))] = iface.find("mac").get("address")
        elif path.startswith("host/libvirt/networks/"):
            net = ET.fromstring(art.content)
            for lease in net.iter("host"):
                leases[(lease.get("name"), net.findtext("name"))] = (lease.get("mac"), lease.get("ip"))
    for key, (mac, _ip) in leases.items():
        assert macs[key] == mac, f"static lease of {key} has another MAC than the domain"
    return macs


@budget(12)
@given(S.blueprints(max_vms=5))
def test_derived_macs_are_libvirt_unique_and_stable(bp):
    compiled = compile_data(bp)
    macs = _macs(compiled)
    assert len(set(macs.values())) == len(macs), "two NICs got the same MAC"
    derived = []
    for vm in bp["vms"]:
        for nic in vm["nics"]:
            mac = macs[(vm["name"], nic["network"])]
            if "mac" in nic:
                assert mac == nic["mac"].lower()
            else:
                assert MAC_RE.match(mac), mac
                derived.append((vm["name"], nic["network"]))
    # stable: another run, on a blueprint changed in everything but names, derives the same MACs
    changed = copy.deepcopy(bp)
    for vm in changed["vms"]:
        vm["cpus"] = 1
        vm["description"] = "changed"
    changed["description"] = "changed too"
    assert _macs(compile_data(changed)) == macs
    # the blueprint name is part of every derived MAC
    if derived:
        renamed = copy.deepcopy(bp)
        renamed["name"] = bp["name"] + "x" if len(bp["name"]) < 30 else "renamed"
        other = _macs(compile_data(renamed))
        assert any(other[k] != macs[k] for k in derived)
