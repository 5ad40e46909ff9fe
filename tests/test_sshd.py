"""sshd family: hardened sshd_config (host + every VM), the host's TOTP PAM stack, fail2ban jail.

Checked by the real tools: `sshd -t` / `sshd -T` (OpenSSH 9.2), `fail2ban-client -t`, and for
real on loopback: an sshd started with the generated host config (in a private mount
namespace with throwaway users, host key and, for TOTP, the generated PAM stack), probed by
ssh-audit, the ssh client and fail2ban-regex.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from compiler import load, schema
from compiler.derive import Plan, derive
from compiler.model import structure
from compiler.render import sshd as family
from compiler.render._trace import trace
from compiler import verify

from .conftest import FIXTURES, ROOT

SSHD_T = str(family.TOOLS / "sshd.sh")
F2B_T = str(family.TOOLS / "sshd-fail2ban.sh")
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_AUDIT = str(Path(sys.executable).parent / "ssh-audit")
EXAMPLE_A = ROOT / "blueprints" / "example.yaml"
EXAMPLE_B = ROOT / "blueprints" / "vps-front.yaml"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: sshd runs in a private mount namespace")

# Facts from OpenSSH 8.7p1 (Rocky/Alma 9), tag V_8_7_P1 of openssh-portable: the server
# keywords it parses (servconf.c, keywords[] minus sUnsupported/sDeprecated) and the
# algorithm names it knows (kex.h, cipher.c, mac.c, sshkey.c).
OPENSSH_8_7_KEYWORDS = frozenset("""
usepam port hostkey hostkeyagent pidfile modulifile logingracetime permitrootlogin syslogfacility
loglevel logverbose hostbasedauthentication hostbasedusesnamefrompacketonly hostbasedacceptedalgorithms
hostbasedacceptedkeytypes hostkeyalgorithms pubkeyauthentication pubkeyacceptedalgorithms
pubkeyacceptedkeytypes pubkeyauthoptions kerberosauthentication kerberosorlocalpasswd
kerberosticketcleanup gssapiauthentication gssapicleanupcredentials gssapistrictacceptorcheck
passwordauthentication kbdinteractiveauthentication challengeresponseauthentication listenaddress
addressfamily printmotd printlastlog ignorerhosts ignoreuserknownhosts x11forwarding x11displayoffset
x11uselocalhost xauthlocation strictmodes permitemptypasswords permituserenvironment compression
rekeylimit tcpkeepalive allowtcpforwarding allowagentforwarding allowusers denyusers allowgroups
denygroups ciphers macs gatewayports subsystem maxstartups persourcemaxstartups persourcenetblocksize
maxauthtries maxsessions banner usedns clientaliveinterval clientalivecountmax authorizedkeysfile
acceptenv setenv permittunnel permittty permituserrc match permitopen permitlisten forcecommand
chrootdirectory hostcertificate revokedkeys trustedusercakeys authorizedprincipalsfile kexalgorithms
include ipqos authorizedkeyscommand authorizedkeyscommanduser authorizedprincipalscommand
authorizedprincipalscommanduser versionaddendum authenticationmethods streamlocalbindmask
streamlocalbindunlink allowstreamlocalforwarding fingerprinthash disableforwarding exposeauthinfo
rdomain casignaturealgorithms securitykeyprovider
""".split())
OPENSSH_8_7_ALGORITHMS = {
    "kexalgorithms": {"diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1", "diffie-hellman-group14-sha256",
                      "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512",
                      "diffie-hellman-group-exchange-sha1", "diffie-hellman-group-exchange-sha256",
                      "ecdh-sha2-nistp256", "ecdh-sha2-nistp384", "ecdh-sha2-nistp521", "curve25519-sha256",
                      "curve25519-sha256@libssh.org", "sntrup761x25519-sha512@openssh.com"},
    "ciphers": {"3des-cbc", "aes128-cbc", "aes192-cbc", "aes256-cbc", "aes128-ctr", "aes192-ctr", "aes256-ctr",
                "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"},
    "macs": {"hmac-sha1", "hmac-sha1-96", "hmac-sha2-256", "hmac-sha2-512", "hmac-md5", "hmac-md5-96",
             "umac-64@openssh.com", "umac-128@openssh.com", "hmac-sha1-etm@openssh.com",
             "hmac-sha1-96-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com",
             "hmac-md5-etm@openssh.com", "hmac-md5-96-etm@openssh.com", "umac-64-etm@openssh.com",
             "umac-128-etm@openssh.com"},
}
_KEY_TYPES_8_7 = {"ssh-ed25519", "sk-ssh-ed25519@openssh.com", "ssh-rsa", "rsa-sha2-256", "rsa-sha2-512",
                  "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                  "sk-ecdsa-sha2-nistp256@openssh.com", "webauthn-sk-ecdsa-sha2-nistp256@openssh.com"}
OPENSSH_8_7_ALGORITHMS["hostkeyalgorithms"] = _KEY_TYPES_8_7
OPENSSH_8_7_ALGORITHMS["pubkeyacceptedalgorithms"] = _KEY_TYPES_8_7


# --- helpers -------------------------------------------------------------------------------

def plan_of(path: Path) -> Plan:
    """Blueprint -> Plan without the other render families (they may be in progress)."""
    return derive(structure(schema.with_defaults(load.load_file(path).data)))


def outputs(path: Path) -> dict:
    return {o.path: o for o in family.render(plan_of(path), {})}


@pytest.fixture(autouse=True)
def only_this_family(monkeypatch):
    """run_validators with this family's VALIDATORS only: other families may be in progress."""
    monkeypatch.setattr(verify, "validators", lambda: family.VALIDATORS)


def write(files: dict, root: Path) -> Path:
    for rel, out in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(out.content)
    return root


def run(*cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, **kw)


def effective(config: Path) -> dict[str, list[str]]:
    """`sshd -T`: the configuration sshd would run with, keyword -> values (one per line)."""
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # as root, sshd insists on it (see sshd.sh)
    with tempfile.TemporaryDirectory(prefix="moat-sshd-T-") as tmp:
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{tmp}/key").check_returncode()
        proc = run(SSHD, "-T", "-f", config, "-h", f"{tmp}/key")
    assert proc.returncode == 0, proc.stderr
    dump: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        dump.setdefault(key, []).append(value)
    return dump


def settings(text: str) -> list[tuple[int, str, str]]:
    """(line number, lower-case keyword, value) of every setting in an sshd_config."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            found.append((n, key.lower(), value.strip()))
    return found


def base_variant(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    text = (FIXTURES / "base.yaml").read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "bp.yaml").write_text(text)
    return tmp_path / "bp.yaml"


# --- generated files and the validators ----------------------------------------------------

def test_bundle_paths(example):
    plan = plan_of(example)
    files = outputs(example)
    expected = {"host/ssh/sshd_config", "host/fail2ban/jail.d/moat-sshd.conf"}
    expected |= {f"vms/{rv.name}/ssh/sshd_config" for rv in plan.vms}
    if plan.blueprint.host.sshd.totp:
        expected.add("host/pam.d/sshd")
    assert set(files) == expected
    assert all(o.mode == 0o444 for o in files.values())


def test_validators_run_on_every_generated_config_and_pass(example, tmp_path):
    files = outputs(example)
    root = write(files, tmp_path)
    findings = verify.run_validators(root)
    checked = {f.path for f in findings}
    # everything but the PAM stack (no validator exists for PAM files; see the PAM tests)
    assert checked == set(files) - {"host/pam.d/sshd"}
    assert all(f.validator.tool.endswith(("sshd", "fail2ban-client")) for f in findings)
    bad = [f"{f.path}: {f.output}" for f in findings if not f.ok]
    assert not bad, "\n".join(bad)


def test_validator_tools_are_the_real_programs():
    assert {v.tool.rsplit("/", 1)[-1] for v in family.VALIDATORS} == {"sshd", "fail2ban-client"}
    assert all(shutil.which(v.tool) for v in family.VALIDATORS)
    assert verify.validators_for("vms/web/ssh/sshd_config")
    assert verify.validators_for("host/fail2ban/jail.d/moat-sshd.conf")
    assert not verify.validators_for("host/pam.d/sshd")


@pytest.mark.parametrize("change, message", [
    (lambda t: t + "NoSuchOption yes\n", "Bad configuration option: NoSuchOption"),
    (lambda t: t.replace("Ciphers chacha20", "Ciphers nosuch-cipher,chacha20"), "Bad SSH2 cipher spec"),
    (lambda t: re.sub(r"(?m)^AllowUsers .*$", "AllowUsers", t), 'no argument after keyword "AllowUsers"'),
    (lambda t: t.replace("KbdInteractiveAuthentication yes", "KbdInteractiveAuthentication no"),
     "AuthenticationMethods cannot be satisfied"),
], ids=["unknown-option", "unknown-cipher", "empty-allowusers", "unsatisfiable-methods"])
def test_sshd_t_rejects_a_broken_config(tmp_path, change, message):
    text = outputs(EXAMPLE_B)["host/ssh/sshd_config"].content.decode()
    broken = tmp_path / "sshd_config"
    broken.write_text(change(text))
    proc = run(SSHD_T, broken)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


def test_sshd_rejection_names_the_line(tmp_path):
    text = outputs(EXAMPLE_A)["host/ssh/sshd_config"].content.decode().replace("MaxAuthTries 3", "MaxAuthTries three")
    (tmp_path / "host/ssh").mkdir(parents=True)
    (tmp_path / "host/ssh/sshd_config").write_text(text)
    [finding] = verify.run_validators(tmp_path)
    line = next(n for n, l in enumerate(text.splitlines(), 1) if l == "MaxAuthTries three")
    assert not finding.ok and finding.lines(tmp_path / "host/ssh/sshd_config") == [line]


def test_effective_host_config(example, tmp_path):
    plan = plan_of(example)
    root = write(outputs(example), tmp_path)
    dump = effective(root / "host/ssh/sshd_config")
    totp = plan.blueprint.host.sshd.totp
    assert dump["port"] == [str(plan.blueprint.host.sshd.port)]
    assert dump["permitrootlogin"] == ["no"]
    assert dump["passwordauthentication"] == ["no"]
    assert dump["permitemptypasswords"] == ["no"]
    assert dump["pubkeyauthentication"] == ["yes"]
    assert dump["kbdinteractiveauthentication"] == ["yes" if totp else "no"]
    assert dump["authenticationmethods"] == ["publickey,keyboard-interactive" if totp else "publickey"]
    assert dump["usepam"] == ["yes"]
    assert dump["allowusers"] == [u.name for u in plan.host_users]
    assert dump["kexalgorithms"] == [",".join(family.KEX)]
    assert dump["ciphers"] == [",".join(family.CIPHERS)]
    assert dump["macs"] == [",".join(family.MACS)]
    assert dump["hostkeyalgorithms"] == ["ssh-ed25519"]
    assert dump["hostkey"][-1] == "/etc/ssh/ssh_host_ed25519_key"  # after the -h test key
    assert "ssh-rsa" not in dump["pubkeyacceptedalgorithms"][0].split(",")
    for key, value in [("x11forwarding", "no"), ("allowtcpforwarding", "no"), ("allowagentforwarding", "no"),
                       ("disableforwarding", "yes"), ("permittunnel", "no"), ("maxauthtries", "3"),
                       ("logingracetime", "30"), ("clientaliveinterval", "300"), ("loglevel", "VERBOSE"),
                       ("hostbasedauthentication", "no"), ("permituserenvironment", "no")]:
        assert dump[key] == [value], key
    assert not any(k.startswith("include") for k in dump)


def test_effective_vm_configs(example, tmp_path):
    plan = plan_of(example)
    root = write(outputs(example), tmp_path)
    for rv in plan.vms:
        dump = effective(root / f"vms/{rv.name}/ssh/sshd_config")
        assert dump["port"] == ["22"]
        assert dump["allowusers"] == [u.name for u in rv.users]
        assert dump["kbdinteractiveauthentication"] == ["no"]
        assert dump["authenticationmethods"] == ["publickey"]
        assert dump["passwordauthentication"] == ["no"] and dump["permitrootlogin"] == ["no"]
        assert dump["ciphers"] == [",".join(family.CIPHERS)]


def test_users_per_machine():
    # Setup B: the host is alice's only, the VM gets every user
    files = outputs(EXAMPLE_B)
    host = dict((k, v) for _, k, v in settings(files["host/ssh/sshd_config"].content.decode()))
    vm = dict((k, v) for _, k, v in settings(files["vms/nextcloud/ssh/sshd_config"].content.decode()))
    assert host["allowusers"] == "alice" and vm["allowusers"] == "alice bob"


def test_a_machine_without_users_lets_nobody_in(tmp_path):
    bp = base_variant(tmp_path, ("    cpus: 2\n", "    cpus: 2\n    users: []\n"))
    root = write(outputs(bp), tmp_path / "out")
    config = root / "vms/web/ssh/sshd_config"
    assert "AllowUsers" not in config.read_text()
    assert run(SSHD_T, config).returncode == 0
    dump = effective(config)
    assert dump["denyusers"] == ["*"] and "allowusers" not in dump


def test_only_what_openssh_8_7_knows(example):
    """Rocky/Alma 9 run OpenSSH 8.7, which is not installable here: every keyword and
    algorithm name must be one that 8.7 parses (facts from its source, above)."""
    for path, out in outputs(example).items():
        if not path.endswith("sshd_config"):
            continue
        for n, key, value in settings(out.content.decode()):
            assert key in OPENSSH_8_7_KEYWORDS, f"{path}:{n}: {key} is unknown to OpenSSH 8.7"
            if key in OPENSSH_8_7_ALGORITHMS:
                unknown = set(value.split(",")) - OPENSSH_8_7_ALGORITHMS[key]
                assert not unknown, f"{path}:{n}: OpenSSH 8.7 does not know {unknown}"


def test_every_user_key_type_can_log_in():
    """Each key type the schema accepts for users has an accepted signature algorithm."""
    pattern = schema.load_schema()["$defs"]["ssh-key"]["pattern"]
    types = re.match(r"\^\(([^)]*)\)", pattern).group(1).replace("\\.", ".").split("|")
    assert "ssh-ed25519" in types
    signatures = {"ssh-rsa": {"rsa-sha2-512", "rsa-sha2-256"}}
    for key_type in types:
        assert signatures.get(key_type, {key_type}) & set(family.PUBKEY_ALGORITHMS), key_type


def test_provenance_of_port_and_users():
    out = outputs(EXAMPLE_B)["host/ssh/sshd_config"]
    lines = out.content.decode().splitlines()
    traced = trace(out)
    port_line = lines.index("Port 53201") + 1
    users_line = lines.index("AllowUsers alice") + 1
    assert ("host", "sshd", "port") in traced[port_line]
    assert ("users", 0, "name") in traced[users_line]
    jail = outputs(EXAMPLE_B)["host/fail2ban/jail.d/moat-sshd.conf"]
    jail_line = jail.content.decode().splitlines().index("port = 53201") + 1
    assert trace(jail)[jail_line] == [("host", "sshd", "port")]


def test_tool_rejection_points_at_the_blueprint_line(tmp_path, monkeypatch):
    """Through the whole build: sshd -t rejects a port the schema was loosened to let through,
    and the error lands on the blueprint line of host.sshd.port."""
    import copy

    from jsonschema import Draft202012Validator

    from compiler import render
    from compiler.diagnostics import MoatError, position_of
    from compiler.pipeline import build_file
    from compiler.render import libvirt

    monkeypatch.setattr(render, "families", lambda: (libvirt, family))  # other families may be in progress
    loose = copy.deepcopy(schema.load_schema())
    loose["$defs"]["port"]["maximum"] = 99999
    monkeypatch.setattr(schema, "validator", lambda: Draft202012Validator(loose, format_checker=schema.format_checker()))
    bp = base_variant(tmp_path, ("sshd: {port: 2201}", "sshd: {port: 70000}"))
    with pytest.raises(MoatError) as info:
        build_file(bp, tmp_path / "out")
    errors = [d for d in info.value.diagnostics if d.is_error]
    assert len(errors) == 1 and errors[0].rule == "tool-rejected"
    assert "sshd rejected host/ssh/sshd_config" in errors[0].message
    assert "Badly formatted port number" in errors[0].message
    assert errors[0].path == ("host", "sshd", "port")
    line = next(i for i, text in enumerate(bp.read_text().splitlines(), 1) if "port: 70000" in text)
    assert position_of(errors[0], info.value.source)[0] == line
    assert not any((tmp_path / "out" / "store").iterdir())


def test_rendering_is_deterministic(example):
    assert {p: o.content for p, o in outputs(example).items()} == {p: o.content for p, o in outputs(example).items()}


# --- PAM (no validator exists for PAM files: parsed here, and run for real below) ----------

PAM_CONTROLS = {"required", "requisite", "sufficient", "optional", "include", "substack"}
# where this machine's PAM modules live (Debian: /lib/<triplet>/security)
PAM_DIR = next(p.parent for pattern in ("/lib/*/security/pam_unix.so", "/usr/lib/*/security/pam_unix.so",
                                        "/lib*/security/pam_unix.so") for p in sorted(Path("/").glob(pattern[1:])))


def pam_rules(text: str) -> list[tuple[str, str, str, list[str]]]:
    rules = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, control, module, *args = line.split()
        rules.append((kind.lstrip("-"), control, module, args))
    return rules


def test_pam_stack_only_with_totp():
    assert "host/pam.d/sshd" not in outputs(EXAMPLE_A)
    assert "host/pam.d/sshd" in outputs(EXAMPLE_B)


def test_pam_stack_parses_and_asks_for_the_code_only():
    text = outputs(EXAMPLE_B)["host/pam.d/sshd"].content.decode()
    assert text.startswith("#%PAM-1.0\n")
    rules = pam_rules(text)
    for kind, control, module, _ in rules:
        assert kind in {"auth", "account", "password", "session"}
        assert control in PAM_CONTROLS or re.fullmatch(r"\[(\w+=\w+ ?)+\]", control)
        if control in {"include", "substack"}:
            assert module in {"password-auth", "postlogin"}  # Rocky/Alma's stock stacks
        else:
            assert (PAM_DIR / module).is_file(), f"{module} is not a PAM module"
    auth = [(control, module, args) for kind, control, module, args in rules if kind == "auth"]
    # the code is required, no password module in the auth stack, no way around a missing secret
    assert auth[0] == ("required", "pam_google_authenticator.so", [])
    assert not any(m in {"password-auth", "system-auth", "pam_unix.so"} for _, m, _ in auth)
    assert not any("nullok" in args for _, _, args in auth)
    assert {kind for kind, *_ in rules} == {"auth", "account", "password", "session"}


# --- fail2ban -------------------------------------------------------------------------------

def test_fail2ban_jail_passes_and_watches_the_sshd_port(example, tmp_path):
    plan = plan_of(example)
    root = write(outputs(example), tmp_path)
    jail = root / "host/fail2ban/jail.d/moat-sshd.conf"
    proc = run(F2B_T, jail)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the effective jail, as the daemon would get it
    base = tmp_path / "f2b"
    shutil.copytree("/etc/fail2ban", base)
    shutil.rmtree(base / "jail.d")
    (base / "jail.d").mkdir()
    shutil.copy(jail, base / "jail.d")
    dump = run("fail2ban-client", "-c", base, "-d").stdout
    assert "['add', 'sshd', 'systemd']" in dump and "['start', 'sshd']" in dump
    assert f"['port', '{plan.blueprint.host.sshd.port}']" in dump
    assert "['set', 'sshd', 'maxretry', 5]" in dump and "['set', 'sshd', 'bantime', '1h']" in dump
    assert "'addaction', 'nftables'" in dump


@pytest.mark.parametrize("old, new", [
    ("mode = aggressive", "filter = nosuchfilter"),
    ("banaction = nftables\n", "banaction = nosuchaction\n"),
    ("backend = systemd", "backend = nosuchbackend"),
    ("[sshd]", "[sshd"),
    ("enabled = true", "enabled = false"),
], ids=["unknown-filter", "unknown-action", "unknown-backend", "broken-section", "disabled"])
def test_fail2ban_wrapper_rejects_a_broken_jail(tmp_path, old, new):
    # fail2ban-client -t resolves filters, actions and the backend, but does not check values
    # (port = notaport, maxretry = many, bantime = forever pass): those are asserted on the
    # dumped jail in test_fail2ban_jail_passes_and_watches_the_sshd_port instead
    text = outputs(EXAMPLE_A)["host/fail2ban/jail.d/moat-sshd.conf"].content.decode()
    assert old in text
    jail = tmp_path / "moat-sshd.conf"
    jail.write_text(text.replace(old, new))
    proc = run(F2B_T, jail)
    assert proc.returncode != 0, proc.stdout + proc.stderr


# --- for real, on loopback ------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def totp(secret: str, at: float | None = None) -> str:
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", int(at if at is not None else time.time()) // 30), hashlib.sha1).digest()
    offset = digest[-1] & 15
    return f"{(struct.unpack('>I', digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 1000000:06d}"


class LoopbackSshd:
    """sshd running a test-local copy of a generated config: Port changed to a free port and
    ListenAddress 127.0.0.1 added, nothing else. It runs in a private mount namespace where
    /etc/passwd, shadow and group are copies with the test users added (homes under a
    temporary directory, one throwaway client key authorized for all, root included), the
    host key is a throwaway one, and /etc/pam.d optionally carries the generated PAM stack.
    Nothing outside the namespace changes."""

    def __init__(self, config: str, users: list[str], pam_sshd: str | None = None):
        self.config, self.users, self.pam_sshd = config, users, pam_sshd

    def __enter__(self) -> LoopbackSshd:
        self.dir = Path(tempfile.mkdtemp(prefix=f"moat-sshd-{os.getpid()}-"))
        self.proc = None
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        d = self.dir
        d.chmod(0o755)  # users must reach their homes below it
        self.port = free_port()
        config, n = re.subn(r"(?m)^Port \d+$", f"Port {self.port}\nListenAddress 127.0.0.1", self.config)
        assert n == 1
        (d / "sshd_config").write_text(config)
        for key in ("client", "hostkey"):
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"moat-test-{key}", "-f", d / key).check_returncode()
        passwd = Path("/etc/passwd").read_text().splitlines()
        taken = {int(line.split(":")[2]) for line in passwd if line}
        uids = iter(u for u in range(61000, 65000) if u not in taken)
        self.homes: dict[str, Path] = {}
        lines = {"passwd": [], "shadow": Path("/etc/shadow").read_text().splitlines(),
                 "group": Path("/etc/group").read_text().splitlines()}
        root_home = d / "root-home"
        for line in passwd:  # root's home moves too: its key is authorized, PermitRootLogin must still refuse
            fields = line.split(":")
            if fields[0] == "root":
                fields[5] = str(root_home)
            lines["passwd"].append(":".join(fields))
        self._authorize(root_home, 0)
        for name in self.users:
            uid = next(uids)
            home = d / "home" / name
            lines["passwd"].append(f"{name}:x:{uid}:{uid}:moat test:{home}:/bin/sh")
            lines["shadow"].append(f"{name}:*:19000:0:99999:7:::")  # no password, not locked
            lines["group"].append(f"{name}:x:{uid}:")
            self._authorize(home, uid)
            self.homes[name] = home
        mounts = {}
        for name, content in lines.items():
            (d / name).write_text("\n".join(content) + "\n")
            mounts[d / name] = f"/etc/{name}"
        (d / "shadow").chmod(0o640)
        mounts[d / "hostkey"] = "/etc/ssh/ssh_host_ed25519_key"
        mounts[d / "hostkey.pub"] = "/etc/ssh/ssh_host_ed25519_key.pub"
        if self.pam_sshd is not None:
            pam = d / "pam.d"
            shutil.copytree("/etc/pam.d", pam)
            (pam / "sshd").write_text(self.pam_sshd)
            # Debian stand-ins for the two Rocky/Alma stacks the generated file includes
            (pam / "password-auth").write_text("account include common-account\npassword include common-password\n"
                                               "session include common-session\n")
            (pam / "postlogin").write_text("session optional pam_permit.so\n")
            mounts[pam] = "/etc/pam.d"
        script = " && ".join(f"mount --bind '{src}' '{dst}'" for src, dst in mounts.items())
        script += f" && exec {SSHD} -D -e -f '{d / 'sshd_config'}'"
        self.log = d / "sshd.log"
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"sshd exited: {self.log.read_text()}"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"sshd did not listen: {self.log.read_text()}")

    def _authorize(self, home: Path, uid: int) -> None:
        (home / ".ssh").mkdir(parents=True)
        shutil.copy(self.dir / "client.pub", home / ".ssh/authorized_keys")
        for path in (home, home / ".ssh", home / ".ssh/authorized_keys"):
            os.chown(path, uid, uid)
        home.chmod(0o755)
        (home / ".ssh").chmod(0o700)
        (home / ".ssh/authorized_keys").chmod(0o600)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def ssh(self, user: str, *options: str, key: bool = True, code: str | None = None,
            command: str = "echo moat-ok $(id -un)") -> subprocess.CompletedProcess:
        """ssh USER@127.0.0.1 COMMAND with the throwaway key; `code` answers keyboard-interactive
        prompts (through SSH_ASKPASS); without it the client runs in batch mode."""
        args = ["ssh", "-F", "/dev/null", "-p", str(self.port), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10"]
        args += ["-i", str(self.dir / "client")] if key else ["-o", "PubkeyAuthentication=no"]
        env = dict(os.environ)
        env.pop("SSH_AUTH_SOCK", None)
        if code is None:
            args += ["-o", "BatchMode=yes"]
        else:
            askpass = self.dir / f"askpass-{code}"
            askpass.write_text(f"#!/bin/sh\necho {code}\n")
            askpass.chmod(0o755)
            env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
        return subprocess.run([*args, *options, f"{user}@127.0.0.1", command], capture_output=True, text=True,
                              timeout=30, stdin=subprocess.DEVNULL, env=env)


def ssh_audit(port: int) -> tuple[int, dict]:
    proc = run(SSH_AUDIT, "-n", "-j", "-p", port, "127.0.0.1")
    return proc.returncode, json.loads(proc.stdout)


def fail2ban_failures(log: Path, jail_text: str, tmp: Path) -> int:
    """Failures fail2ban's sshd filter (in the jail's mode) finds for 127.0.0.1 in sshd's log."""
    mode = re.search(r"(?m)^mode = (\w+)$", jail_text).group(1)
    stamp = time.strftime("%b %d %H:%M:%S")
    lines = [f"{stamp} kvm sshd[1000]: {line}" for line in log.read_text().splitlines()]
    (tmp / "auth.log").write_text("\n".join(lines) + "\n")
    proc = run("fail2ban-regex", tmp / "auth.log", f"sshd[mode={mode}]")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return int(re.search(r"^Failregex: (\d+) total", proc.stdout, re.M).group(1))


@needs_root
@pytest.mark.slow
def assert_less_than_key_and_code_is_refused(server: LoopbackSshd, secret: str) -> None:
    """With TOTP: the key alone, the key and a wrong code, the code without the key: refused."""
    key_only = server.ssh("alice")
    assert key_only.returncode == 255 and "Permission denied (keyboard-interactive)" in key_only.stderr
    wrong = f"{(int(totp(secret)) + 1) % 1000000:06d}"
    assert server.ssh("alice", code=wrong).returncode == 255
    # without the key, the code alone is never asked for
    no_key = server.ssh("alice", code=totp(secret), key=False)
    assert no_key.returncode == 255 and "Permission denied (publickey)" in no_key.stderr


def test_hardened_sshd_on_loopback(tmp_path):
    """Setup A's host config, for real: ssh-audit finds nothing to fail, only the key of an
    allowed user gets in, and fail2ban's filter counts the refused attempts."""
    files = outputs(EXAMPLE_A)
    config = files["host/ssh/sshd_config"].content.decode()
    with LoopbackSshd(config, ["alice", "mallory"]) as server:
        # ssh-audit: no failure; its only warnings are that X25519 alone is not post-quantum
        # (curve25519 stays for clients without sntrup761: OpenSSH < 8.5, paramiko, PuTTY < 0.78)
        code, audit = ssh_audit(server.port)
        assert code in (0, 2), audit
        notes = {(kind, a["algorithm"]): a.get("notes", {}) for kind in ("kex", "key", "enc", "mac")
                 for a in audit[kind]}
        assert not [k for k, n in notes.items() if n.get("fail")]
        assert {k for k, n in notes.items() if n.get("warn")} == {("kex", "curve25519-sha256"),
                                                                 ("kex", "curve25519-sha256@libssh.org")}
        assert audit["cves"] == []
        assert {a["algorithm"] for a in audit["key"]} == {"ssh-ed25519"}
        # the allowed user's key works
        ok = server.ssh("alice")
        assert ok.returncode == 0 and ok.stdout.strip() == "moat-ok alice", ok.stderr
        # a valid key of a user not in AllowUsers does not; neither does root's
        assert server.ssh("mallory").returncode == 255
        assert server.ssh("root").returncode == 255
        # passwords: the server offers publickey and nothing else
        denied = server.ssh("alice", "-v", "-o", "PreferredAuthentications=password,keyboard-interactive", key=False)
        assert denied.returncode == 255
        offered = set(re.findall(r"Authentications that can continue: (\S+)", denied.stderr))
        assert offered == {"publickey"}
        assert "Permission denied (publickey)" in denied.stderr
        # forwarding is off
        fwd = server.ssh("alice", "-o", "ExitOnForwardFailure=yes", "-R", f"{free_port()}:127.0.0.1:{server.port}")
        assert fwd.returncode == 255 and "remote port forwarding failed" in fwd.stderr, fwd.stderr


@needs_root
@pytest.mark.slow
def test_refused_logins_are_counted_by_the_fail2ban_filter(tmp_path):
    files = outputs(EXAMPLE_A)
    jail = files["host/fail2ban/jail.d/moat-sshd.conf"].content.decode()
    maxretry = int(re.search(r"(?m)^maxretry = (\d+)$", jail).group(1))
    with LoopbackSshd(files["host/ssh/sshd_config"].content.decode(), ["alice", "mallory"]) as server:
        for _ in range(2):
            server.ssh("mallory")
            server.ssh("alice", "-o", "PreferredAuthentications=password", key=False)
            server.ssh("root")
        time.sleep(0.2)
        failures = fail2ban_failures(server.log, jail, tmp_path)
    # six refused logins from one address: more than the jail tolerates
    assert failures >= maxretry


@needs_root
@pytest.mark.slow
def test_totp_after_the_key_on_loopback():
    """Setup B's host (totp: true), for real, with the generated PAM stack and
    pam_google_authenticator: key + right code gets in; key alone, key + wrong code, a
    code without the key, or a user without a TOTP secret do not."""
    files = outputs(EXAMPLE_B)
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEH"
    with LoopbackSshd(files["host/ssh/sshd_config"].content.decode(), ["alice"],
                      pam_sshd=files["host/pam.d/sshd"].content.decode()) as server:
        ga = server.homes["alice"] / ".google_authenticator"
        ga.write_text(f'{secret}\n" TOTP_AUTH\n')
        uid = ga.parent.stat().st_uid
        os.chown(ga, uid, uid)
        ga.chmod(0o400)

        ok = server.ssh("alice", "-v", code=totp(secret))
        assert ok.returncode == 0 and ok.stdout.strip() == "moat-ok alice", ok.stderr
        assert 'Authenticated using "publickey" with partial success' in ok.stderr
        assert "Authenticated to 127.0.0.1" in ok.stderr and "keyboard-interactive" in ok.stderr

        assert_less_than_key_and_code_is_refused(server, secret)
        # no secret file: refused (no nullok)
        ga.unlink()
        assert server.ssh("alice", code=totp(secret)).returncode == 255
        log = server.log.read_text()
    assert "Accepted keyboard-interactive/pam for alice" in log
    assert "Partial publickey for alice" in log
