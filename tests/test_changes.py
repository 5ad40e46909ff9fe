"""`moat plan` and `moat diff` on real pairs of blueprints (tests/change_cases.py): one pair per
kind of change, what the analysis must find in each, and the reviewed markdown of each (golden
files); then every flag and exit code of both commands, with every kind of side."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from compiler.changes.actions import SERVICES, _vm_paths, informational
from compiler.changes.analysis import analyze
from compiler.changes.sides import from_blueprint, from_bundle
from compiler.changes.views import diff_markdown
from compiler.pipeline import build_file

from .change_cases import CASES, EXAMPLE, FRONT, GOLDEN, analysis, markdown, write_pair
from .conftest import run_moat
from .golden import EXAMPLES, golden_files


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_kind_of_change_is_told_apart(case, tmp_path):
    found = analysis(case, tmp_path)
    assert found.verdict == case.verdict
    actions = {(a.action, a.subject) for a in found.actions}
    for wanted in case.actions:
        assert wanted in actions, f"{wanted} not in {sorted(actions)}"
    kinds = {(f.kind, f.subject) for f in found.findings}
    for wanted in case.findings:
        assert wanted in kinds, f"{wanted} not in {sorted(kinds)}"
    assert tuple(a.subject for a in found.refused()) == case.refused
    if case.verdict == "security-relevant":
        assert any(f.widens for f in found.findings)
    else:
        assert not any(f.widens for f in found.findings), found.findings


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_markdown_matches_its_reviewed_golden_file(case, tmp_path):
    golden = GOLDEN / f"{case.name}.md"
    assert golden.is_file(), "no golden markdown yet: run `make golden` and review it"
    got = markdown(case, tmp_path)
    assert got == golden.read_text(), f"{golden.name} differs (run `make golden` if intended):\n{got[:3000]}"


def test_no_change_is_said_first_and_exits_0(tmp_path):
    case = next(c for c in CASES if c.name == "no-change-reordered")
    old, new = write_pair(case, tmp_path)
    proc = run_moat("diff", old, new)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0].endswith("no change (nothing to do)")
    same = run_moat("plan", old, old)
    assert same.returncode == 0 and "no change" in same.stdout
    assert "files:" not in run_moat("diff", old, old).stdout


def test_every_generated_file_has_an_owner():
    """A VM, a network or a named service: a new artifact family must say what reads it."""
    for blueprint in EXAMPLES:
        side = from_blueprint(blueprint, blueprint.name)
        owned = set()
        for vm in side.plan.by_name:
            owned.update(p for paths in _vm_paths(vm, set(side.files)).values() for p in paths)
        owned.update(f"host/libvirt/networks/{n.network.name}.xml" for n in side.plan.networks)
        for path in sorted(set(side.files) - owned - {"blueprint.yaml"}):
            if informational(path):
                continue
            service = next(s for s in SERVICES if __import__("fnmatch").fnmatchcase(path, s[0]))
            assert service[1] != "unclassified files", f"{path}: no service reads it (compiler/changes/actions.py)"


def test_golden_bundles_compare_like_blueprints(tmp_path):
    """A bundle directory is a side: its files as they are, its plan from its blueprint.yaml."""
    bundle = tmp_path / "bundle"
    for rel, content in golden_files("example").items():
        (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
        (bundle / rel).write_bytes(content)
    same = analyze(from_bundle(bundle, "golden"), from_blueprint(EXAMPLE, "example"))
    assert same.verdict == "no change", [f.path for f in same.files]


def _built(blueprint: Path, out: Path) -> Path:
    _, stored = build_file(blueprint, out, tools=False)
    return stored.path


def test_weaker_tls_and_sshd_algorithms_in_a_bundle_are_found(tmp_path):
    """The files are read, not only the blueprint: a bundle whose haproxy accepts TLS 1.0 and
    whose sshd accepts a CBC cipher (an older or edited compiler) is security-relevant."""
    old = _built(FRONT, tmp_path / "out")
    new = tmp_path / "edited"
    shutil.copytree(old, new, symlinks=False)
    for path in new.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    haproxy = new / "vps/haproxy/haproxy.cfg"
    haproxy.write_text(haproxy.read_text().replace("ssl-min-ver TLSv1.2", "ssl-min-ver TLSv1.0"))
    sshd = new / "vps/ssh/sshd_config"
    sshd.write_text(sshd.read_text().replace("Ciphers chacha20-poly1305@openssh.com", "Ciphers aes128-cbc,chacha20-poly1305@openssh.com"))
    found = analyze(from_bundle(old, "old"), from_bundle(new, "new"))
    kinds = {(f.kind, f.subject): f for f in found.findings}
    assert ("tls-weakened", "vps") in kinds and "TLSv1.0" in kinds[("tls-weakened", "vps")].message
    assert ("sshd-weakened", "vps") in kinds and "aes128-cbc" in kinds[("sshd-weakened", "vps")].message
    assert found.verdict == "security-relevant"
    assert {("reload", "haproxy"), ("reload", "sshd (VPS)")} <= {(a.action, a.subject) for a in found.actions}


def test_haproxy_accepting_more_key_exchange_groups_is_tls_weakened(tmp_path):
    """ssl-default-bind-curves is read like the cipher lists: a group added (X448, which Mozilla's
    intermediate profile rejects) weakens TLS, and so does the line removed (OpenSSL's defaults
    accept X448 and secp521r1 again); a group taken away only changes it."""
    old = _built(FRONT, tmp_path / "out")
    line = "ssl-default-bind-curves X25519:prime256v1:secp384r1"
    assert line in (old / "vps/haproxy/haproxy.cfg").read_text()
    edits = {"added": line + ":X448", "removed": "", "narrowed": "ssl-default-bind-curves X25519:prime256v1"}
    found = {}
    for name, replacement in edits.items():
        new = tmp_path / name
        shutil.copytree(old, new, symlinks=False)
        for path in new.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        haproxy = new / "vps/haproxy/haproxy.cfg"
        haproxy.write_text(haproxy.read_text().replace(line, replacement))
        result = analyze(from_bundle(old, "old"), from_bundle(new, name))
        found[name] = ({(f.kind, f.subject): f for f in result.findings}, result.verdict)
    weakened = found["added"][0][("tls-weakened", "vps")]
    assert "X448" in weakened.message and weakened.widens and found["added"][1] == "security-relevant"
    assert "ssl-default-bind-curves" in found["removed"][0][("tls-weakened", "vps")].message
    assert found["removed"][1] == "security-relevant"
    narrowed = found["narrowed"][0]
    assert ("tls-weakened", "vps") not in narrowed and not narrowed[("tls-changed", "vps")].widens
    assert found["narrowed"][1] != "security-relevant"


def test_plan_flags_and_exit_codes(tmp_path):
    shrink = next(c for c in CASES if c.name == "data-disk-shrunk")
    old, new = write_pair(shrink, tmp_path)
    refused = run_moat("plan", old, new)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "shrunk data disk nextcloud/data" in refused.stdout and "[DATA LOSS: refused]" in refused.stdout
    assert "--allow-data-loss nextcloud" in refused.stdout
    allowed = run_moat("plan", old, new, "--allow-data-loss", "nextcloud")
    assert allowed.returncode == 1 and "[DATA LOSS: allowed]" in allowed.stdout
    other = run_moat("plan", old, new, "--allow-data-loss", "vpn")
    assert other.returncode == 3
    expect = run_moat("plan", old, new, "--allow-data-loss", "nextcloud", "--expect-no-changes")
    assert expect.returncode == 2 and "error[unexpected-changes]" in expect.stderr
    assert run_moat("plan", old, old, "--expect-no-changes").returncode == 0
    doc = json.loads(run_moat("plan", old, new, "--format", "json").stdout)
    assert doc["format_version"] == 1 and doc["command"] == "plan" and doc["refused"] == ["nextcloud/data"]
    assert doc["verdict"] == "disruptive" and "diff" not in doc["files"][0]
    md = run_moat("plan", old, new, "--format", "markdown")
    assert md.returncode == 3 and "| shrunk | data disk `nextcloud/data` |" in md.stdout and "refused" in md.stdout
    # the most disruptive action first
    lines = refused.stdout.splitlines()
    assert "! shrunk" in lines[1] and "-/+ reinstall VM nextcloud" in lines[2] and "install-only" in lines[3]


def test_diff_flags_and_exit_codes(tmp_path):
    case = next(c for c in CASES if c.name == "add-vm-with-forward")
    old, new = write_pair(case, tmp_path)
    text = run_moat("diff", old, new)
    assert text.returncode == 1
    head = text.stdout.splitlines()
    assert "security-relevant" in head[0] and head[2] == "security:"
    assert "+++ b/host/libvirt/domains/git.xml" in text.stdout
    stat = run_moat("diff", old, new, "--stat")
    assert stat.returncode == 1 and "A host/libvirt/domains/git.xml" in stat.stdout and "+++ " not in stat.stdout
    md = run_moat("diff", old, new, "--format", "markdown")
    assert md.stdout.startswith("🔐 **moat diff: security-relevant**") and "<details>" in md.stdout
    # the picture changed: said in its section, listed, its source not shown as a diff
    assert "### Topology" in md.stdout and "- modified `topology.svg`" in md.stdout and "+++ b/topology.svg" not in md.stdout
    doc = json.loads(run_moat("diff", old, new, "--format", "json").stdout)
    assert doc["format_version"] == 1 and doc["verdict"] == "security-relevant"
    assert {"port-opened", "forward-added"} <= {f["kind"] for f in doc["security"] if f["widens"]}
    assert any(f["path"] == "host/libvirt/domains/git.xml" and f["diff"] for f in doc["files"])
    assert {"kind": "vm", "subject": "git", "action": "create"}.items() <= next(
        a for a in doc["actions"] if a["subject"] == "git").items()


def test_a_broken_side_is_an_error_with_its_location(tmp_path):
    case = next(c for c in CASES if c.name == "cpus-memory")
    old, new = write_pair(case, tmp_path)
    new.write_text(new.read_text().replace("cpus: 4", "cpus: many", 1))
    for command in ("plan", "diff"):
        proc = run_moat(command, old, new)
        assert proc.returncode == 2, proc.stderr
        assert f"{new}:" in proc.stderr and "error[" in proc.stderr and "hint:" in proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
    missing = run_moat("diff", old, tmp_path / "nope.yaml")
    assert missing.returncode == 2 and "error[side-unreadable]" in missing.stderr and "hint:" in missing.stderr


def test_generations_of_an_output_directory(tmp_path):
    case = next(c for c in CASES if c.name == "port-closed")
    old, new = write_pair(case, tmp_path)
    out = tmp_path / "out"
    _built(old, out)
    built = run_moat("build", new, "--out", out, "--no-tools")
    assert built.returncode == 0, built.stderr
    assert f"changes from generation 1: disruptive (" in built.stdout and f"moat plan 1 2 --out {out}" in built.stdout
    proc = run_moat("plan", "1", "2", "--out", out)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("moat plan: generation 1 -> generation 2: disruptive")
    assert run_moat("diff", out / "current", new).returncode == 0
    gone = run_moat("plan", "1", "7", "--out", out)
    assert gone.returncode == 2 and "no generation 7" in gone.stderr


def test_git_revisions_of_a_blueprint(tmp_path):
    repo = tmp_path / "repo"
    (repo / "blueprints").mkdir(parents=True)
    case = next(c for c in CASES if c.name == "firewall-opening")
    old, new = write_pair(case, tmp_path)
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=repo,  # noqa: E731
                                    check=True, capture_output=True, text=True)
    git("init", "-q", "-b", "main")
    shutil.copy(old, repo / "blueprints/example.yaml")
    git("add", ".")
    git("commit", "-qm", "one")
    git("checkout", "-qb", "change")
    shutil.copy(new, repo / "blueprints/example.yaml")
    git("commit", "-qam", "two")
    proc = run_moat("diff", "main", "HEAD", "--", "blueprints/example.yaml", cwd=repo)
    assert proc.returncode == 1, proc.stderr
    assert "moat diff: main -> HEAD: security-relevant" in proc.stdout and "tcp/9443 opens" in proc.stdout
    # NEW left out: the working tree's blueprint
    assert run_moat("diff", "main", "--", "blueprints/example.yaml", cwd=repo).returncode == 1
    assert run_moat("diff", "HEAD", "--", "blueprints/example.yaml", cwd=repo).returncode == 0
    bad = run_moat("diff", "nosuch", "HEAD", "--", "blueprints/example.yaml", cwd=repo)
    assert bad.returncode == 2 and "error[side-unreadable]" in bad.stderr and "no blueprints/example.yaml in git revision nosuch" in bad.stderr
    lost = run_moat("diff", "main", "HEAD", cwd=repo)
    assert lost.returncode == 2 and "name the blueprint after --" in lost.stderr


def test_markdown_stays_one_comment_and_never_cuts_security(tmp_path):
    case = next(c for c in CASES if c.name == "add-vm-with-forward")
    found = analysis(case, tmp_path)
    full = diff_markdown(found)
    small = diff_markdown(found, limit=2500)
    assert len(small) < 2500 + 500 and len(small) < len(full)
    security = full[full.index("### Security"):full.index("### Plan")]
    assert security in small
    assert "left out to fit one comment" in small


def test_help_teaches_both_commands():
    for command in ("plan", "diff"):
        proc = run_moat(command, "--help")
        assert proc.returncode == 0
        assert "examples:" in proc.stdout and "exit codes:" in proc.stdout and "git revision" in proc.stdout


def test_paths_by_vm_are_what_the_patterns_say_for_vms_whose_names_share_a_start():
    """_ByVm reads every path once; each VM's roles are still those of the path patterns."""
    import fnmatch

    from compiler.changes.actions import _ByVm

    def by_pattern(vm: str, paths: set[str]) -> dict[str, list[str]]:
        roles: dict[str, list[str]] = {"seed": [], "domain": [], "os": [], "volumes": []}
        for p in sorted(paths):
            if p.startswith(f"vms/{vm}/"):
                roles["seed"].append(p)
            elif p == f"host/libvirt/domains/{vm}.xml":
                roles["domain"].append(p)
            elif fnmatch.fnmatchcase(p, f"host/libvirt/volumes/*/{vm}-os.xml"):
                roles["os"].append(p)
            elif fnmatch.fnmatchcase(p, f"host/libvirt/volumes/*/{vm}-*.xml"):
                roles["volumes"].append(p)
        return roles

    vms = ["web", "web-1", "web-1-os", "db", "d"]
    paths = set(golden_files("example")) | {
        p for vm in vms for p in (f"vms/{vm}/user-data", f"host/libvirt/domains/{vm}.xml",
                                  f"host/libvirt/volumes/default/{vm}-os.xml", f"host/libvirt/volumes/data/{vm}-logs.xml",
                                  f"host/libvirt/volumes/data/{vm}-os-2.xml")}
    index = _ByVm(paths)
    for vm in vms + ["git", "nextcloud", "ids", "nobody"]:
        assert index.roles(vm) == by_pattern(vm, paths), vm
