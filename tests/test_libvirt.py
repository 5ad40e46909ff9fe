"""libvirt definitions are validated by libvirt's own schemas (virt-xml-validate)."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET

from compiler.pipeline import build_file, check_file
from compiler.verify import missing_tools, run_validators, validators

from .conftest import FIXTURES, ROOT


def test_validators_are_installed():
    # `make test` installs them; a missing tool is a failure, never a skip
    assert missing_tools() == {}, "run `make system-deps` as root"


def test_every_libvirt_file_passes_virt_xml_validate(example, tmp_path):
    _, stored = build_file(example, tmp_path)
    findings = [f for f in run_validators(stored.path) if f.path.startswith("host/libvirt/") and f.validator.tool == "virt-xml-validate"]
    libvirt_files = {p.relative_to(stored.path).as_posix() for p in stored.path.glob("host/libvirt/*/**/*.xml")}
    assert libvirt_files and {f.path for f in findings} == libvirt_files
    bad = [f"{f.path}: {f.output}" for f in findings if not f.ok]
    assert not bad, "\n".join(bad)


def test_virt_xml_validate_rejects_a_broken_domain(tmp_path):
    _, stored = build_file(ROOT / "blueprints" / "example.yaml", tmp_path / "out")
    broken = tmp_path / "broken.xml"
    text = (stored.path / "host/libvirt/domains/nextcloud.xml").read_text()
    broken.write_text(text.replace('<vcpu placement="static">', '<vcpu placement="everywhere">'))
    proc = subprocess.run(["virt-xml-validate", str(broken), "domain"], capture_output=True, text=True)
    assert proc.returncode != 0


def test_example_a_matches_the_reference_deployment():
    compiled = check_file(ROOT / "blueprints" / "example.yaml")
    net = ET.fromstring(compiled.files["host/libvirt/networks/default.xml"].content)
    hosts = {h.get("name"): (h.get("ip"), h.get("mac")) for h in net.iter("host")}
    assert hosts == {"nextcloud": ("192.168.122.5", "52:54:00:50:28:a7"),
                     "onion": ("192.168.122.50", "52:54:00:af:a2:d7"),
                     "vpn": ("192.168.122.150", "52:54:00:18:17:c1")}
    assert net.find("forward").get("mode") == "nat" and net.find("ip").get("address") == "192.168.122.1"
    onion = ET.fromstring(compiled.files["host/libvirt/domains/onion.xml"].content)
    nets = [i.find("source").get("network") for i in onion.iter("interface")]
    assert nets == ["default", "mirror"]
    assert all(m.get("type") == "virtio" for m in onion.iter("model"))
    assert onion.find("devices/disk[@device='cdrom']/source").get("pool") == "ISOs"
    mirror = ET.fromstring(compiled.files["host/libvirt/networks/mirror.xml"].content)
    assert mirror.find("bridge").get("name") == "br1" and mirror.find("forward").get("mode") == "bridge"
    pool = ET.fromstring(compiled.files["host/libvirt/pools/images.xml"].content)
    assert pool.get("type") == "logical" and pool.find("source/name").text == "images"
    memory = {name: int(ET.fromstring(f.content).find("memory").text)
              for name, f in compiled.files.items() if name.startswith("host/libvirt/domains/")}
    assert memory == {"host/libvirt/domains/nextcloud.xml": 12 * 1024, "host/libvirt/domains/onion.xml": 14 * 1024,
                      "host/libvirt/domains/vpn.xml": 2 * 1024}


def test_markup_in_values_is_escaped(tmp_path):
    text = (FIXTURES / "base.yaml").read_text().replace("    cpus: 2\n", "    description: R&D <lab> box\n    cpus: 2\n")
    (tmp_path / "bp.yaml").write_text(text)
    _, stored = build_file(tmp_path / "bp.yaml", tmp_path / "out")
    domain = stored.path / "host/libvirt/domains/web.xml"
    assert ET.parse(domain).find("description").text == "R&D <lab> box"
    assert subprocess.run(["virt-xml-validate", str(domain), "domain"], capture_output=True).returncode == 0


def test_validator_table_names_installable_packages():
    assert all(v.package for v in validators())
    assert all(shutil.which(v.tool) for v in validators())


def test_domains_attach_their_seed_and_boot_the_disk_before_the_installer():
    """One mechanism for both seed kinds (compiler/seeds.py): a read-only SATA cdrom from the pool
    ISOs, never booted; the OS disk boots first, the installer (iso, kickstart) second."""
    from compiler import seeds

    files = check_file(ROOT / "blueprints" / "example.yaml").files

    def layout(vm: str):
        dom = ET.fromstring(files[f"host/libvirt/domains/{vm}.xml"].content)
        assert dom.find("os/boot") is None  # per-device boot order only
        return [(d.get("device"), d.find("target").get("dev"), d.find("source").get("pool"), d.find("source").get("volume"),
                 d.find("boot").get("order") if d.find("boot") is not None else None, d.find("readonly") is not None)
                for d in dom.iter("disk")]

    assert layout("nextcloud") == [("disk", "vda", "images", "nextcloud-os", "1", False),
                                   ("disk", "vdb", "images", "nextcloud-data", None, False),
                                   ("cdrom", "sda", "ISOs", seeds.seed_name("nextcloud", "cidata"), None, True)]
    assert layout("vpn") == [("disk", "vda", "images", "vpn-os", "1", False),
                             ("cdrom", "sda", "ISOs", seeds.INSTALLER_ISO["rocky9"], "2", True),
                             ("cdrom", "sdb", "ISOs", seeds.seed_name("vpn", "oemdrv"), None, True)]
    assert layout("onion") == [("disk", "vda", "images", "onion-os", "1", False),
                               ("cdrom", "sda", "ISOs", "securityonion-2.4.iso", "2", True)]
    # the installer is optional (an installed VM starts without it), the seed is not
    vpn = ET.fromstring(files["host/libvirt/domains/vpn.xml"].content)
    policies = {d.find("target").get("dev"): d.find("source").get("startupPolicy") for d in vpn.iter("disk")}
    assert policies == {"vda": None, "sda": "optional", "sdb": None}
    # the apply script refreshes pools before it defines domains, then checks the seeds
    apply = files["host/libvirt/moat-libvirt-apply"].content.decode()
    assert apply.index("pool-refresh") < apply.index("virsh_ define")
    assert 'SEEDS="nextcloud-cidata.iso vpn-oemdrv.iso"' in apply


def test_a_blueprint_without_pool_isos_gets_the_default_one():
    files = check_file(ROOT / "blueprints" / "vps-front.yaml").files
    text = files["host/libvirt/pools/ISOs.xml"].content.decode()
    pool = ET.fromstring(text)
    assert pool.get("type") == "dir" and pool.find("target/path").text == "/ISOs"
    assert "host.pools declares no pool ISOs" in text
    assert ET.fromstring(files["host/libvirt/domains/nextcloud.xml"].content).find(
        "devices/disk[@device='cdrom']/source").attrib == {"pool": "ISOs", "volume": "nextcloud-cidata.iso"}
    # any blueprint with a VM installed from an image or a kickstart has it
    base = check_file(FIXTURES / "base.yaml").files
    assert "host/libvirt/pools/ISOs.xml" in base


def test_a_kickstart_vm_boots_the_installer_the_blueprint_names(tmp_path):
    """install.iso with method kickstart names the DVD in pool ISOs; without it, install.os's default."""
    text = (ROOT / "blueprints" / "example.yaml").read_text()
    old = "install: { method: kickstart, os: rocky9 }"
    assert old in text
    (tmp_path / "bp.yaml").write_text(text.replace(old, "install: { method: kickstart, os: rocky9, iso: Rocky-9.5-x86_64-dvd.iso }"))
    files = check_file(tmp_path / "bp.yaml").files
    dom = ET.fromstring(files["host/libvirt/domains/vpn.xml"].content)
    booted = [d.find("source").get("volume") for d in dom.iter("disk") if d.find("boot") is not None]
    assert booted == ["vpn-os", "Rocky-9.5-x86_64-dvd.iso"]
