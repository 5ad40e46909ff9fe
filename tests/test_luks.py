"""LUKS on encrypted data disks: the generated provisioning script, run for real on loop devices.

This machine has no dm-crypt, but luksFormat, luksAddKey and `open --test-passphrase` work on
loop devices (MACHINE-NOTES), which is everything the script does besides asking systemd to
mount (skipped under MOAT_LUKS_ROOT). The crypttab and fstab it writes are checked by systemd's
own parsers through compiler/verify_tools/luks-crypttab.sh.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest

from compiler.pipeline import check_file
from compiler.render import luks
from compiler.render._trace import trace
from compiler.verify import validators_for

from .conftest import FIXTURES, ROOT

# test-only: cheap PBKDF so a run takes well under a second; the script's default is argon2id
FAST = {"MOAT_LUKS_PBKDF_ARGS": "--pbkdf pbkdf2 --pbkdf-force-iterations 1000"}
PASSPHRASE = "correct horse battery staple"

DISKS = """    data_disks:
      - {name: data, size: 32MiB, mount: /srv/data}
      - {name: scratch, size: 32MiB, mount: /srv/scratch, encrypted: false}
      - {name: app-logs, size: 40MiB, mount: /var/log/app}
"""


def run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, stdin=subprocess.DEVNULL, timeout=120, **kw)


def validator_command(file: Path) -> list[str]:
    (validator,) = luks.VALIDATORS
    return [part.replace("{file}", str(file)) for part in validator.command]


def blueprint_with_disks(tmp_path: Path) -> Path:
    text = (FIXTURES / "base.yaml").read_text().replace("    os_disk: {size: 20GiB}\n", "    os_disk: {size: 20GiB}\n" + DISKS)
    path = tmp_path / "disks.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def script(tmp_path) -> Path:
    """The script moat generates for VM web of the test blueprint (data, app-logs encrypted)."""
    out = check_file(blueprint_with_disks(tmp_path)).files[luks.script_path("web")]
    path = tmp_path / "moat-luks-provision"
    path.write_bytes(out.content)
    path.chmod(out.mode)
    return path


class Machine:
    """A fake VM root: dev/vdX symlinks to loop devices, etc/ for keys, crypttab and fstab."""

    def __init__(self, tmp_path: Path, stack: ExitStack, script: Path):
        self.root = tmp_path / "root"
        (self.root / "dev").mkdir(parents=True)
        (self.root / "etc").mkdir()
        self.tmp, self.stack, self.script = tmp_path, stack, script
        self.passphrase = tmp_path / "passphrase"
        self.passphrase.write_text(PASSPHRASE + "\n")  # the newline is not part of it

    def disk(self, target: str, mib: int) -> str:
        image = self.tmp / f"{target}.img"
        with open(image, "wb") as f:
            f.truncate(mib * 1024 * 1024)
        loop = run("losetup", "-f", "--show", str(image)).stdout.strip()
        self.stack.callback(run, "losetup", "-d", loop, check=False)
        (self.root / "dev" / target).symlink_to(loop)
        return loop

    def provision(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return run(str(self.script), *args, check=False,
                   env={**os.environ, **FAST, "MOAT_LUKS_ROOT": str(self.root), **(env or {})})

    def etc(self, name: str) -> Path:
        return self.root / "etc" / name

    def key(self, disk: str) -> Path:
        return self.etc("luks-keys") / f"{disk}.key"


@pytest.fixture
def machine(tmp_path, script):
    with ExitStack() as stack:
        yield Machine(tmp_path, stack, script)


def opens(device: str, key: Path | bytes) -> bool:
    if isinstance(key, bytes):
        return subprocess.run(["cryptsetup", "open", "--test-passphrase", "--key-file=-", device], input=key,
                              capture_output=True, timeout=60).returncode == 0
    return run("cryptsetup", "open", "--test-passphrase", "--key-file", str(key), device, check=False).returncode == 0


def keyslots(device: str) -> dict:
    return json.loads(run("cryptsetup", "luksDump", "--dump-json-metadata", device).stdout)["keyslots"]


def crypttab_check(*files: Path) -> subprocess.CompletedProcess:
    return run(str(luks.CRYPTTAB_CHECK), *map(str, files), check=False)


# --- the bundle ----------------------------------------------------------------------------

def test_examples_get_a_script_for_each_vm_with_encrypted_disks_and_shellcheck_passes(example, tmp_path):
    files = check_file(example).files
    scripts = sorted(path for path in files if "/luks/" in path)
    # both examples: only nextcloud has a data disk (encrypted by default)
    assert scripts == [luks.script_path("nextcloud")] == ["vms/nextcloud/luks/moat-luks-provision"]
    out = files[scripts[0]]
    assert out.mode == 0o555
    assert [v.pattern for v in validators_for(scripts[0])] == ["vms/*/luks/moat-luks-provision"]
    script = tmp_path / "moat-luks-provision"
    script.write_bytes(out.content)
    proc = run(*validator_command(script), check=False)
    assert proc.returncode == 0, proc.stdout
    assert "provision_disk 'data' 'vdb' '/var/lib/nextcloud'" in out.content.decode()


def test_shellcheck_validator_rejects_a_broken_script(tmp_path):
    text = check_file(ROOT / "blueprints" / "example.yaml").files[luks.script_path("nextcloud")].content.decode()
    broken = tmp_path / "moat-luks-provision"
    broken.write_text(text.replace('key=$ROOT$KEYS_DIR/$disk.key', 'key=$ROOT$KEYS_DIR/$dsik.key'))
    proc = run(*validator_command(broken), check=False)
    assert proc.returncode != 0 and "dsik" in proc.stdout
    broken.write_text(text)
    assert run(*validator_command(broken), check=False).returncode == 0


def test_only_encrypted_disks_are_listed_with_their_guest_devices(tmp_path):
    compiled = check_file(blueprint_with_disks(tmp_path))
    out = compiled.files[luks.script_path("web")]
    calls = [line for line in out.content.decode().splitlines() if line.startswith("provision_disk ")]
    # vda is the OS disk, vdc the unencrypted scratch disk
    assert calls == ["provision_disk 'data' 'vdb' '/srv/data' '32'",
                     "provision_disk 'app-logs' 'vdd' '/var/log/app' '40'"]
    assert [v.target for v in luks.encrypted_volumes(compiled.plan.vm("web"))] == ["vdb", "vdd"]
    # each disk line traces back to its data disk in the blueprint (provenance)
    lines = trace(out)
    number = out.content.decode().splitlines().index(calls[1]) + 1
    disk = ("vms", 0, "data_disks", 2)
    assert lines[number] == [disk + ("name",), disk + ("target",), disk + ("mount",), disk + ("size",)]


def test_install_path_and_passphrase_are_what_the_script_documents(script):
    text = script.read_text()
    assert luks.INSTALL_PATH == "/usr/local/sbin/moat-luks-provision"
    assert f"{luks.INSTALL_PATH} [PASSPHRASE_FILE]" in text
    assert f"${{{luks.PASSPHRASE_ENV}:-}}" in text
    assert 'PBKDF_ARGS=${MOAT_LUKS_PBKDF_ARGS:-"--pbkdf argon2id"}' in text


# --- behaviour, on loop devices ------------------------------------------------------------

def test_provision_formats_keys_and_writes_crypttab_once(machine):
    data = machine.disk("vdb", 32)
    scratch = machine.disk("vdc", 32)
    logs = machine.disk("vdd", 40)
    # an existing crypttab with a stale line for data_crypt, a comment and another volume
    machine.etc("crypttab").write_text("# keep me\nold_crypt UUID=0f0e0d0c-0b0a-4909-8807-060504030201 none luks\n"
                                       "data_crypt /dev/vdb none luks\n")
    machine.etc("fstab").write_text("UUID=0a0b0c0d-0e0f-4001-8002-030405060708 / ext4 defaults 0 1\n")

    first = machine.provision(str(machine.passphrase))
    assert first.returncode == 0, first.stderr

    for disk, device in (("data", data), ("app-logs", logs)):
        assert run("cryptsetup", "isLuks", "--type", "luks2", device, check=False).returncode == 0
        key = machine.key(disk)
        st = key.stat()
        assert (st.st_size, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (4096, 0o400, 0, 0)
        assert opens(device, key)
        assert opens(device, PASSPHRASE.encode())      # the passphrase stays as recovery key
        assert not opens(device, os.urandom(4096))     # a wrong key does not
        slots = keyslots(device)
        # slot 0: the passphrase; slot 1: the keyfile, preferred so that boot tries it first
        assert sorted(slots) == ["0", "1"] and slots["1"].get("priority") == 2 and "priority" not in slots["0"]
    assert not opens(data, machine.key("app-logs"))    # each disk has its own key
    assert stat.S_IMODE(machine.etc("luks-keys").stat().st_mode) == 0o700
    assert run("blkid", "-p", scratch, check=False).returncode == 2  # the unencrypted disk is untouched

    uuid = {d: run("cryptsetup", "luksUUID", dev).stdout.strip() for d, dev in (("data", data), ("app-logs", logs))}
    assert machine.etc("crypttab").read_text().splitlines() == [
        "# keep me",
        "old_crypt UUID=0f0e0d0c-0b0a-4909-8807-060504030201 none luks",
        f"data_crypt UUID={uuid['data']} /etc/luks-keys/data.key luks,discard",
        f"app-logs_crypt UUID={uuid['app-logs']} /etc/luks-keys/app-logs.key luks,discard",
    ]
    assert machine.etc("fstab").read_text().splitlines()[1:] == [
        "/dev/mapper/data_crypt /srv/data ext4 defaults,x-systemd.makefs 0 2",
        "/dev/mapper/app-logs_crypt /var/log/app ext4 defaults,x-systemd.makefs 0 2",
    ]
    check = crypttab_check(machine.etc("crypttab"), machine.etc("fstab"))
    assert check.returncode == 0, check.stdout + check.stderr

    # a second run: nothing changes, no passphrase needed, nothing said
    files = [machine.etc("crypttab"), machine.etc("fstab"), machine.key("data"), machine.key("app-logs")]
    before = {f: (f.read_bytes(), f.stat().st_mtime_ns, f.stat().st_ino) for f in files}
    slots = {dev: keyslots(dev) for dev in (data, logs)}
    headers = {dev: run("cryptsetup", "luksDump", dev).stdout for dev in (data, logs)}
    again = machine.provision()
    assert (again.returncode, again.stderr) == (0, "")
    assert {f: (f.read_bytes(), f.stat().st_mtime_ns, f.stat().st_ino) for f in files} == before
    assert {dev: keyslots(dev) for dev in (data, logs)} == slots
    assert {dev: run("cryptsetup", "luksDump", dev).stdout for dev in (data, logs)} == headers


def test_passphrase_file_may_come_from_the_environment(machine):
    data = machine.disk("vdb", 32)
    machine.disk("vdd", 40)
    proc = machine.provision(env={luks.PASSPHRASE_ENV: str(machine.passphrase)})
    assert proc.returncode == 0, proc.stderr
    assert opens(data, machine.key("data"))


def test_reinstalled_vm_gets_a_new_keyfile_through_the_passphrase(machine):
    data = machine.disk("vdb", 32)
    machine.disk("vdd", 40)
    assert machine.provision(str(machine.passphrase)).returncode == 0
    uuid_line = machine.etc("crypttab").read_text()
    old_key = machine.key("data").read_bytes()
    # a reinstall from a new image: the data disks stay, /etc is new
    for path in (machine.etc("luks-keys"), machine.etc("crypttab"), machine.etc("fstab")):
        subprocess.run(["rm", "-rf", str(path)], check=True)

    no_passphrase = machine.provision()
    assert no_passphrase.returncode != 0 and "needs the initial passphrase" in no_passphrase.stderr
    wrong = machine.tmp / "wrong"
    wrong.write_text("not it\n")
    wrong_run = machine.provision(str(wrong))
    assert wrong_run.returncode != 0 and "the passphrase it was formatted with" in wrong_run.stderr
    empty = machine.tmp / "empty"
    empty.write_text("\n")
    assert "first line is empty" in machine.provision(str(empty)).stderr
    assert len(keyslots(data)) == 2  # failed attempts added nothing

    proc = machine.provision(str(machine.passphrase))
    assert proc.returncode == 0, proc.stderr
    assert machine.key("data").read_bytes() != old_key and opens(data, machine.key("data"))
    assert len(keyslots(data)) == 3  # the lost keyfile's slot stays until luksKillSlot
    assert machine.etc("crypttab").read_text() == uuid_line  # same UUID, same line


def test_refuses_to_format_a_device_that_is_not_blank(machine):
    data = machine.disk("vdb", 32)
    machine.disk("vdd", 40)
    run("mkfs.ext4", "-q", "-F", data)
    proc = machine.provision(str(machine.passphrase))
    assert proc.returncode != 0 and "refusing to format" in proc.stderr and "not blank" in proc.stderr
    assert run("blkid", "-p", "-o", "value", "-s", "TYPE", data).stdout.strip() == "ext4"
    assert not machine.etc("crypttab").exists()


def test_refuses_to_format_a_device_of_another_size(machine):
    machine.disk("vdb", 48)  # the blueprint says 32MiB: not the disk we think
    proc = machine.provision(str(machine.passphrase))
    assert proc.returncode != 0 and "the blueprint says 32 MiB" in proc.stderr
    assert run("blkid", "-p", str(machine.root / "dev" / "vdb"), check=False).returncode == 2


def test_formatting_needs_the_passphrase(machine):
    data = machine.disk("vdb", 32)
    proc = machine.provision()
    assert proc.returncode != 0 and "needs the initial passphrase" in proc.stderr
    assert run("cryptsetup", "isLuks", data, check=False).returncode != 0


@pytest.mark.slow
def test_default_pbkdf_is_argon2id(tmp_path):
    # no MOAT_LUKS_PBKDF_ARGS: the secure default (argon2id, seconds per key slot); one disk
    text = blueprint_with_disks(tmp_path).read_text().replace("      - {name: app-logs, size: 40MiB, mount: /var/log/app}\n", "")
    (tmp_path / "one.yaml").write_text(text)
    script = tmp_path / "one-disk"
    script.write_bytes(check_file(tmp_path / "one.yaml").files[luks.script_path("web")].content)
    script.chmod(0o555)
    with ExitStack() as stack:
        machine = Machine(tmp_path, stack, script)
        data = machine.disk("vdb", 32)
        env = {k: v for k, v in os.environ.items() if k != "MOAT_LUKS_PBKDF_ARGS"}
        proc = run(str(script), str(machine.passphrase), check=False, env={**env, "MOAT_LUKS_ROOT": str(machine.root)})
        assert proc.returncode == 0, proc.stderr
        slots = keyslots(data)
        assert len(slots) == 2 and {s["kdf"]["type"] for s in slots.values()} == {"argon2id"}
        segment = json.loads(run("cryptsetup", "luksDump", "--dump-json-metadata", data).stdout)["segments"]["0"]
        assert segment["encryption"] == "aes-xts-plain64"


# --- the crypttab check --------------------------------------------------------------------

def test_crypttab_check_rejects_what_systemd_would_not_use(machine):
    machine.disk("vdb", 32)
    machine.disk("vdd", 40)
    assert machine.provision(str(machine.passphrase)).returncode == 0
    crypttab, fstab = machine.etc("crypttab"), machine.etc("fstab")
    good = crypttab.read_text()
    assert crypttab_check(crypttab, fstab).returncode == 0

    bad = machine.tmp / "bad"
    for text, says in [
        (good.replace("luks,discard", "luks,dicsard", 1), "unknown /etc/crypttab option 'dicsard'"),
        (good.replace("luks,discard", "luks,discard,tries=many", 1), "Failed to parse tries=many"),
        (good + "lonely_crypt\n", ":3: no systemd-cryptsetup@lonely_crypt.service"),
        (good + good.splitlines()[0] + "\n", "duplicate"),
        (good.replace("data_crypt", "data/crypt", 1), "not valid"),
    ]:
        bad.write_text(text)
        proc = crypttab_check(bad)
        assert proc.returncode == 1 and says in proc.stdout, (text, proc.stdout)

    for text, says in [
        (fstab.read_text().replace(" /srv/data ", " srv/data ", 1), "no srv-data.mount"),
        (fstab.read_text() + "/dev/mapper/x /x ext4 defaults,x-systemd.device-timeout=soon 0 2\n", "Failed to parse timeout"),
    ]:
        bad.write_text(text)
        proc = crypttab_check(crypttab, bad)
        assert proc.returncode == 1 and says in proc.stdout, (text, proc.stdout)
