"""vps_login family: the VPS's sshd_config, its TOTP PAM stack (Debian 12), its fail2ban jail, and
the certbot check of vps/letsencrypt/cli.ini.

Checked by the real tools, each shown to reject a broken variant: `sshd -t` / `sshd -T`
(OpenSSH 9.2, Debian 12's), `fail2ban-client -t`, certbot (2.1, Debian 12's) parsing cli.ini
offline. For real on this Debian 12 machine: the VPS's sshd on loopback (private mount namespace,
throwaway users) with the generated Debian PAM stack and pam_google_authenticator; a
fail2ban-server running the generated jail with the journal backend, banning into nftables
inside a network namespace created here.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from compiler import load, schema, verify
from compiler.derive import Plan, derive
from compiler.model import structure
from compiler.render import sshd as sshd_family
from compiler.render import vps as vps_family
from compiler.render import vps_login as family
from compiler.render._trace import trace

from .conftest import ROOT
from .test_sshd import (PAM_CONTROLS, PAM_DIR, LoopbackSshd, assert_less_than_key_and_code_is_refused, effective,
                        fail2ban_failures, run, ssh_audit, totp, write)

EXAMPLE_A = ROOT / "blueprints" / "example.yaml"
EXAMPLE_B = ROOT / "blueprints" / "vps-front.yaml"
SSHD_T = str(family.TOOLS / "sshd.sh")
F2B_T = str(family.TOOLS / "sshd-fail2ban.sh")
CERTBOT_T = str(family.TOOLS / "vps-certbot.sh")
SSHD = "vps/ssh/sshd_config"
PAM = "vps/pam.d/sshd"
JAIL = "vps/fail2ban/jail.d/moat-sshd.conf"
CLI = "vps/letsencrypt/cli.ini"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mount and network namespaces")


# --- helpers -------------------------------------------------------------------------------

def plan_of(path: Path) -> Plan:
    """Blueprint -> Plan without the other render families (they may be in progress)."""
    return derive(structure(schema.with_defaults(load.load_file(path).data)))


def outputs(path: Path) -> dict:
    """This family's files, and certbot's cli.ini (rendered by the vps family, checked here)."""
    plan = plan_of(path)
    files = {o.path: o for o in family.render(plan, {})}
    files.update((o.path, o) for o in vps_family.render(plan, {}) if o.path == CLI)
    return files


def variant(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    text = EXAMPLE_B.read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / f"bp-{len(list(tmp_path.glob('bp-*')))}.yaml"
    path.write_text(text)
    return path


def totp_variant(tmp_path: Path) -> Path:
    """Setup B with vps.sshd.totp: true (the example leaves it false)."""
    return variant(tmp_path, ("  sshd:\n    port: 53202\n", "  sshd:\n    port: 53202\n    totp: true\n"))


@pytest.fixture(autouse=True)
def only_this_family(monkeypatch):
    """run_validators with this family's VALIDATORS only: other families may be in progress."""
    monkeypatch.setattr(verify, "validators", lambda: family.VALIDATORS)


# --- which files, and the validators ---------------------------------------------------------

def test_bundle_paths(example, tmp_path):
    files = {o.path: o for o in family.render(plan_of(example), {})}
    if plan_of(example).blueprint.vps is None:
        assert files == {}  # example.yaml: no VPS, no VPS files
        return
    assert set(files) == {SSHD, JAIL}  # vps-front.yaml: vps.sshd.totp is false, no PAM file
    totp_files = {o.path: o for o in family.render(plan_of(totp_variant(tmp_path)), {})}
    assert set(totp_files) == {SSHD, JAIL, PAM}
    assert all(o.mode == 0o444 for o in (*files.values(), *totp_files.values()))


def test_the_vps_sshd_config_is_the_sshd_familys():
    """Same template and settings as the host's: only the role, port, users and notes differ."""
    out = outputs(EXAMPLE_B)[SSHD]
    assert out.template == "sshd/sshd_config.j2"
    text = out.content.decode()
    assert text.splitlines()[1] == "# sshd_config for the VPS front (Debian): a complete file, valid for OpenSSH 8.7 (Rocky/Alma 9) to 9.x."
    assert "\nPort 53202\n" in text and "\nAllowUsers alice\n" in text
    for line in ("KexAlgorithms " + ",".join(sshd_family.KEX), "Ciphers " + ",".join(sshd_family.CIPHERS),
                 "KbdInteractiveAuthentication no", "AuthenticationMethods publickey", "UsePAM yes"):
        assert f"\n{line}\n" in text


def test_validators_run_on_every_generated_file_and_pass(tmp_path):
    for bp in (EXAMPLE_B, totp_variant(tmp_path)):
        files = outputs(bp)
        root = write(files, tmp_path / bp.stem)
        findings = verify.run_validators(root, cache=False)
        # everything but the PAM stack (no validator exists for PAM files: run for real below)
        assert {f.path for f in findings} == set(files) - {PAM}
        assert {f.validator.tool for f in findings} == {"sshd", "fail2ban-client", "certbot"}
        bad = [f"{f.path}: {f.output}" for f in findings if not f.ok]
        assert not bad, "\n".join(bad)


def test_validators_are_the_real_programs():
    assert {v.tool for v in family.VALIDATORS} == {"sshd", "fail2ban-client", "certbot"}
    assert all(verify.which(v.tool) for v in family.VALIDATORS)
    assert [v.pattern for v in family.VALIDATORS if v.tool == "certbot"] == [CLI]
    # the VPS sshd_config is checked once, here (the vps family no longer renders or checks it)
    assert not [v for v in vps_family.VALIDATORS if v.pattern.startswith("vps/ssh")]
    assert not verify.validators_for(PAM)


def test_effective_config_without_and_with_totp(tmp_path):
    for bp, totp_on in ((EXAMPLE_B, False), (totp_variant(tmp_path), True)):
        root = write(outputs(bp), tmp_path / bp.stem)
        dump = effective(root / SSHD)
        assert dump["port"] == ["53202"] and dump["allowusers"] == ["alice"]
        assert dump["kbdinteractiveauthentication"] == ["yes" if totp_on else "no"]
        assert dump["authenticationmethods"] == ["publickey,keyboard-interactive" if totp_on else "publickey"]
        assert dump["usepam"] == ["yes"] and dump["passwordauthentication"] == ["no"]
        assert dump["permitrootlogin"] == ["no"] and dump["permitemptypasswords"] == ["no"]


@pytest.mark.parametrize("totp_on, change, message", [
    (False, lambda t: t.replace("Port 53202", "Port 53202x"), "Badly formatted port number"),
    (False, lambda t: t + "NoSuchOption yes\n", "Bad configuration option: NoSuchOption"),
    (True, lambda t: t.replace("KbdInteractiveAuthentication yes", "KbdInteractiveAuthentication no"),
     "AuthenticationMethods cannot be satisfied"),
], ids=["bad-port", "unknown-option", "totp-unsatisfiable"])
def test_sshd_t_rejects_a_broken_config(tmp_path, totp_on, change, message):
    text = outputs(totp_variant(tmp_path) if totp_on else EXAMPLE_B)[SSHD].content.decode()
    broken = tmp_path / "sshd_config"
    broken.write_text(change(text))
    proc = run(SSHD_T, broken)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr


def test_provenance_of_port_and_users(tmp_path):
    files = outputs(EXAMPLE_B)
    for rel, line, origin in ((SSHD, "Port 53202", ("vps", "sshd", "port")), (SSHD, "AllowUsers alice", ("users", 0, "name")),
                              (JAIL, "port = 53202", ("vps", "sshd", "port"))):
        out = files[rel]
        assert origin in trace(out)[out.content.decode().splitlines().index(line) + 1], (rel, line)


# --- PAM: Debian 12's stack with the TOTP code in place of the password ----------------------

def test_pam_stack_is_debians_with_the_code_in_place_of_the_password(tmp_path):
    text = outputs(totp_variant(tmp_path))[PAM].content.decode()
    rules = []
    for line in text.splitlines():
        if line.startswith("@include "):
            included = line.split()[1]
            assert (Path("/etc/pam.d") / included).is_file(), f"Debian has no /etc/pam.d/{included}"
            rules.append(("@include", "", included, []))
        elif line.strip() and not line.startswith("#"):
            m = re.fullmatch(r"(\w+)\s+(\[[^]]*\]|\w+)\s+(\S+)\s*(.*)", line)
            assert m, f"not a PAM rule: {line}"
            kind, control, module, args = m.groups()
            assert kind in {"auth", "account", "password", "session"}
            assert control in PAM_CONTROLS or re.fullmatch(r"\[(\w+=\w+ ?)+\]", control), control
            assert (PAM_DIR / module).is_file(), f"{module} is not a PAM module on Debian 12"
            rules.append((kind, control, module, args.split()))
    # auth: the code, nothing else (no common-auth, no pam_unix: no password), no nullok
    auth = [(control, module, args) for kind, control, module, args in rules if kind == "auth"]
    assert auth == [("required", "pam_google_authenticator.so", [])]
    includes = [module for kind, _, module, _ in rules if kind == "@include"]
    assert includes == ["common-account", "common-session", "common-password"]
    # what Debian's own /etc/pam.d/sshd does besides authentication, kept
    modules = {module for _, _, module, _ in rules}
    assert {"pam_nologin.so", "pam_loginuid.so", "pam_limits.so", "pam_keyinit.so", "pam_env.so",
            "pam_motd.so", "pam_selinux.so"} <= modules
    # the provisioning of the secret is stated, not invented
    assert "`moat secrets totp BLUEPRINT <user>`" in text and "~/.google_authenticator" in text


# --- fail2ban ----------------------------------------------------------------------------------

def f2b_dir(tmp_path: Path, *jails: Path) -> Path:
    """A copy of the installed fail2ban configuration with only the given jail.d files."""
    base = tmp_path / "f2b"
    shutil.copytree("/etc/fail2ban", base)
    shutil.rmtree(base / "jail.d")
    shutil.rmtree(base / "fail2ban.d", ignore_errors=True)
    for local in base.rglob("*.local"):
        local.unlink()
    (base / "jail.d").mkdir()
    (base / "fail2ban.d").mkdir()
    for jail in jails:
        shutil.copy(jail, base / "jail.d")
    return base


def test_fail2ban_jail_passes_and_overrides_debians_default(tmp_path):
    root = write(outputs(EXAMPLE_B), tmp_path)
    jail = root / JAIL
    proc = run(F2B_T, jail)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # on the VPS, Debian's jail.d/defaults-debian.conf ([sshd] enabled, defaults) is read first
    debian = tmp_path / "defaults-debian.conf"
    debian.write_text("[sshd]\nenabled = true\nport = ssh\nbackend = auto\nmaxretry = 3\n")
    dump = run("fail2ban-client", "-c", f2b_dir(tmp_path, debian, jail), "-d").stdout
    assert "['add', 'sshd', 'systemd']" in dump and "['start', 'sshd']" in dump
    assert "['port', '53202']" in dump and "'port', 'ssh'" not in dump
    assert "['set', 'sshd', 'maxretry', 5]" in dump and "['set', 'sshd', 'bantime', '1h']" in dump
    # Debian's ssh.service: the journal is matched by the command name, not only the unit
    assert "['set', 'sshd', 'addjournalmatch', '_SYSTEMD_UNIT=sshd.service', '+', '_COMM=sshd']" in dump
    assert "'addaction', 'nftables'" in dump


@pytest.mark.parametrize("old, new", [
    ("mode = aggressive", "filter = nosuchfilter"),
    ("banaction = nftables\n", "banaction = nosuchaction\n"),
    ("backend = systemd", "backend = nosuchbackend"),
    ("enabled = true", "enabled = false"),
], ids=["unknown-filter", "unknown-action", "unknown-backend", "disabled"])
def test_fail2ban_wrapper_rejects_a_broken_jail(tmp_path, old, new):
    text = outputs(EXAMPLE_B)[JAIL].content.decode()
    assert old in text
    jail = tmp_path / "moat-sshd.conf"
    jail.write_text(text.replace(old, new))
    assert run(F2B_T, jail).returncode != 0


@needs_root
@pytest.mark.slow
def test_fail2ban_server_runs_the_jail_and_bans_into_nftables(tmp_path):
    """fail2ban-server with the generated jail (and Debian's stock configuration), in a network
    namespace of its own: the systemd journal backend starts (python3-systemd), and a ban is
    an element of the nftables set guarding the VPS's sshd port, in that namespace only."""
    root = write(outputs(EXAMPLE_B), tmp_path)
    base = f2b_dir(tmp_path, root / JAIL)
    (base / "fail2ban.d" / "moat-test.conf").write_text("[Definition]\ndbfile = :memory:\n")
    sock, pidfile = tmp_path / "f2b.sock", tmp_path / "f2b.pid"
    log = open(tmp_path / "f2b.log", "wb")
    proc = subprocess.Popen(["unshare", "--net", "fail2ban-server", "-f", "-x", "-c", str(base), "-s", str(sock),
                             "-p", str(pidfile), "--logtarget", "stderr", "--loglevel", "INFO"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client = ("fail2ban-client", "-s", sock)
    try:
        deadline = time.monotonic() + 20
        while run(*client, "ping").returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "f2b.log").read_text()
            time.sleep(0.2)
        status = run(*client, "status", "sshd")
        assert status.returncode == 0, status.stderr
        assert "Journal matches:\t_SYSTEMD_UNIT=sshd.service + _COMM=sshd" in status.stdout
        assert run(*client, "set", "sshd", "banip", "192.0.2.7").returncode == 0
        netns = f"--net=/proc/{pidfile.read_text().strip()}/ns/net"
        deadline = time.monotonic() + 10
        while "192.0.2.7" not in (rules := run("nsenter", netns, "nft", "list", "table", "inet", "f2b-table").stdout):
            assert time.monotonic() < deadline, (tmp_path / "f2b.log").read_text()
            time.sleep(0.2)
        assert "tcp dport 53202 ip saddr @addr-set-sshd reject" in rules
        assert "f2b-table" not in run("nft", "list", "tables").stdout  # this machine's own ruleset: untouched
        assert run(*client, "stop").returncode == 0
        proc.wait(15)
        assert "Jail 'sshd' started" in (tmp_path / "f2b.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


# --- certbot's cli.ini ----------------------------------------------------------------------

def test_certbot_accepts_both_forms_of_cli_ini(tmp_path):
    with_email = outputs(EXAMPLE_B)[CLI].content.decode()
    without = outputs(variant(tmp_path, ("  acme:\n    email: admin@example.org\n", "")))[CLI].content.decode()
    assert "\nemail = admin@example.org\n" in with_email
    assert "\nregister-unsafely-without-email = true\n" in without and "\nemail" not in without
    for n, text in enumerate((with_email, without)):
        (tmp_path / f"cli{n}.ini").write_text(text)
        proc = run(CERTBOT_T, tmp_path / f"cli{n}.ini")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not list(tmp_path.glob("moat-certbot.*"))


@pytest.mark.parametrize("old, new, says, line_of", [
    ("non-interactive = true", "non-interactive = true\nno-such-key = 1",
     "unrecognized arguments: --no-such-key=1", "no-such-key = 1"),
    ("key-type = ecdsa", "key-type = dsa", "argument --key-type: invalid choice: 'dsa'", "key-type = dsa"),
    ("http-01-port = 8888", "http-01-port = 8888x", "argument --http-01-port: invalid int value", "http-01-port = 8888x"),
    ("preferred-challenges = http", "preferred-challenges = smtp", "Unrecognized challenges: smtp",
     "preferred-challenges = smtp"),
    ("agree-tos = true", "agree-tos = sure", "Unexpected value for agree-tos", "agree-tos = sure"),
    ("authenticator = standalone", "authenticator = nosuch", "The requested nosuch plugin does not appear to be installed",
     "authenticator = nosuch"),
    ("email = admin@example.org\n", "", "provide --agree-tos and --email", None),
], ids=["unknown-key", "bad-key-type", "bad-port", "bad-challenge", "bad-boolean", "unknown-authenticator",
        "no-email"])
def test_certbot_rejects_a_broken_cli_ini(tmp_path, old, new, says, line_of):
    text = outputs(EXAMPLE_B)[CLI].content.decode()
    assert old in text
    broken = tmp_path / "vps/letsencrypt/cli.ini"
    broken.parent.mkdir(parents=True)
    broken.write_text(text.replace(old, new))
    proc = run(CERTBOT_T, broken)
    assert proc.returncode != 0 and says in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    [finding] = verify.run_validators(tmp_path, cache=False)
    assert not finding.ok
    lines = broken.read_text().splitlines()
    assert finding.lines(broken) == ([lines.index(line_of) + 1] if line_of else [])


def test_certbot_rejection_points_at_the_blueprint_line(tmp_path):
    """A value certbot refuses on the http-01-port line lands on blueprint vps.acme.port."""
    files = outputs(EXAMPLE_B)
    root = write(files, tmp_path)
    text = (root / CLI).read_text()
    (root / CLI).write_text(text.replace("http-01-port = 8888", "http-01-port = 88x8"))
    [diag] = verify.check_bundle(root, files)
    assert diag.rule == "tool-rejected" and "certbot rejected vps/letsencrypt/cli.ini" in diag.message
    assert diag.path == ("vps", "acme", "port")


# --- for real, on loopback --------------------------------------------------------------------

@needs_root
@pytest.mark.slow
def test_key_only_vps_sshd_on_loopback(tmp_path):
    """Setup B's VPS (totp false): ssh-audit finds nothing to fail, only alice's key gets in,
    nothing else is offered, and fail2ban's filter counts the refused attempts."""
    files = outputs(EXAMPLE_B)
    jail = files[JAIL].content.decode()
    maxretry = int(re.search(r"(?m)^maxretry = (\d+)$", jail).group(1))
    with LoopbackSshd(files[SSHD].content.decode(), ["alice", "bob"]) as server:
        code, audit = ssh_audit(server.port)
        assert code in (0, 2) and not [a for kind in ("kex", "key", "enc", "mac") for a in audit[kind]
                                       if a.get("notes", {}).get("fail")], audit
        ok = server.ssh("alice")
        assert ok.returncode == 0 and ok.stdout.strip() == "moat-ok alice", ok.stderr
        # bob is a user of the blueprint, but not of the VPS (vps.users: [alice])
        for _ in range(2):
            assert server.ssh("bob").returncode == 255
            assert server.ssh("root").returncode == 255
            denied = server.ssh("alice", "-v", "-o", "PreferredAuthentications=password,keyboard-interactive",
                                key=False)
            assert denied.returncode == 255 and "Permission denied (publickey)" in denied.stderr
        time.sleep(0.2)
        failures = fail2ban_failures(server.log, jail, tmp_path)
    assert failures >= maxretry


def ssh_answering(server: LoopbackSshd, user: str, code: str, prompts: Path) -> subprocess.CompletedProcess:
    """ssh with the throwaway key; every keyboard-interactive prompt is logged to `prompts` and
    answered with `code`."""
    askpass = server.dir / f"askpass-{os.getpid()}"
    askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{prompts}'\necho {code}\n")
    askpass.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
    return subprocess.run(["ssh", "-F", "/dev/null", "-p", str(server.port), "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-i", str(server.dir / "client"),
                           f"{user}@127.0.0.1", "echo moat-ok $(id -un)"],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, env=env)


@needs_root
@pytest.mark.slow
def test_totp_after_the_key_on_loopback(tmp_path):
    """The VPS with vps.sshd.totp, for real on Debian 12: the generated sshd_config and PAM
    stack (Debian's common-* files, pam_google_authenticator). Key + right code gets in after
    exactly one prompt, the code's; the key alone, a wrong code, a code without the key, or a
    user who has not run google-authenticator do not."""
    files = outputs(totp_variant(tmp_path))
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEH"
    prompts = tmp_path / "prompts"
    with LoopbackSshd(files[SSHD].content.decode(), ["alice"], pam_sshd=files[PAM].content.decode()) as server:
        ga = server.homes["alice"] / ".google_authenticator"  # what `google-authenticator -t` writes
        ga.write_text(f'{secret}\n" RATE_LIMIT 3 30\n" WINDOW_SIZE 3\n" DISALLOW_REUSE\n" TOTP_AUTH\n')
        uid = ga.parent.stat().st_uid
        os.chown(ga, uid, uid)
        ga.chmod(0o400)

        ok = ssh_answering(server, "alice", totp(secret), prompts)
        assert ok.returncode == 0 and ok.stdout.strip() == "moat-ok alice", ok.stderr
        # one question, the code's: no password prompt (common-auth is not in the stack)
        assert prompts.read_text().splitlines() == ["(alice@127.0.0.1) Verification code: "]

        assert_less_than_key_and_code_is_refused(server, secret)
        # no secret file (google-authenticator never run): refused, no nullok
        ga.unlink()
        prompts.unlink()
        no_secret = ssh_answering(server, "alice", totp(secret, time.time() + 30), prompts)
        log = server.log.read_text()
    # the code is still asked for (nothing tells a prober who has a secret), and refused until
    # MaxAuthTries ends the connection; never a password prompt
    assert no_secret.returncode == 255 and "Too many authentication failures" in no_secret.stderr
    assert set(prompts.read_text().splitlines()) == {"(alice@127.0.0.1) Verification code: "}
    last = log.rsplit("Connection from ", 1)[1]
    assert "Failed keyboard-interactive/pam for alice" in last and "Accepted" not in last.replace("Accepted key ", "")
    assert log.count("Accepted keyboard-interactive/pam for alice") == 1 and "Partial publickey for alice" in log


@needs_root
def test_totp_with_the_secret_moat_made_and_moat_install_put_in_place(tmp_path):
    """No `google-authenticator` by hand: `moat secrets init` makes alice's secret, the VPS
    archive carries it and moat-install (staged, MOAT_ROOT, with alice's account) installs it as
    ~alice/.google_authenticator; the real sshd + Debian PAM stack then let alice in with the
    key and a code computed from the secrets directory's file (RFC 6238, test_sshd.totp), and
    refuse the same code a second time (DISALLOW_REUSE, one of the file's option lines)."""
    import tarfile

    from compiler import secrets
    from compiler.vps_archive import vps_archive

    bp = totp_variant(tmp_path)
    d = tmp_path / "secrets"
    secrets.init(bp, d)
    result = vps_archive(bp, d, tmp_path / "front.tar.gz", tmp_path / "out", tools=False)
    with tarfile.open(result.path) as tar:
        tar.extractall(tmp_path / "x", filter="fully_trusted")
    files = outputs(bp)
    secret = (d / "totp/vps/alice").read_text().split("\n")[0]
    prompts = tmp_path / "prompts"
    with LoopbackSshd(files[SSHD].content.decode(), ["alice"], pam_sshd=files[PAM].content.decode()) as server:
        home = server.homes["alice"]
        uid = home.stat().st_uid
        root = tmp_path / "root"
        (root / "etc").mkdir(parents=True)
        (root / "home/alice").mkdir(parents=True)
        (root / "etc/passwd").write_text(f"alice:x:{uid}:{uid}::/home/alice:/bin/sh\n")
        staged = run(str(tmp_path / "x/moat-vps/moat-install"), env={**os.environ, "MOAT_ROOT": str(root)})
        assert staged.returncode == 0, staged.stderr
        installed = root / "home/alice/.google_authenticator"
        assert (installed.stat().st_uid, installed.stat().st_mode & 0o777) == (uid, 0o400)
        shutil.copy2(installed, home / ".google_authenticator")
        os.chown(home / ".google_authenticator", uid, uid)

        code = totp(secret)
        ok = ssh_answering(server, "alice", code, prompts)
        assert ok.returncode == 0 and ok.stdout.strip() == "moat-ok alice", ok.stderr
        again = server.ssh("alice", code=code)
        assert again.returncode == 255
        log = server.log.read_text()
    assert log.count("Accepted keyboard-interactive/pam for alice") == 1
