"""The tools tree: moat's own Debian root of validators, built once per machine, entered per check.

For real, as root: the tree `make test` builds (moat tools build) runs every validator of both
examples with the same verdicts as this machine's own tools; inside it a check sees the tree, the
bundle read-only and an empty /tmp, and leaves no mount or process behind. A build killed at each
of its steps leaves no tree, and the next one converges. Without root the build says, in one
warning, that it used this machine's tools and how to get the tree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.pipeline import build_file
from compiler.tools_tree import build as tree_build
from compiler.tools_tree import enter
from compiler.tools_tree.recipe import BUNDLE_MOUNT, METADATA, MINBASE_DEBS, Recipe, cache_root, mirror, recipe
from compiler.verify import VERIFY_TOOLS, run_validators, toolset, tools_recipe, validators

from .conftest import EXAMPLES, ROOT

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="the tools tree is built and entered as root (CI is root)")


def test_the_recipe_holds_every_validators_package_and_program():
    r = tools_recipe()
    for v in validators():
        for package in v.package.split():
            if package.startswith("pypi:"):
                assert package[5:] in dict(r.pypi), v
            else:
                assert package in r.debs or package in MINBASE_DEBS, v
    assert {"sshd", "nft", "virt-xml-validate", "ksvalidator", "haproxy", "openvpn"} <= set(r.programs)
    assert not any(p.endswith(".sh") for p in r.programs), "a wrapper script is no program of the tree"
    assert all("==" not in v and v.count(".") >= 1 for _, v in r.pypi), "PyPI validators are pinned exactly"


def test_the_key_names_the_contents():
    r = tools_recipe()
    assert r.key == recipe(validators()).key
    assert Recipe(r.release, (*r.debs, "zsh"), r.pypi, r.programs).key != r.key
    assert Recipe("trixie", r.debs, r.pypi, r.programs).key != r.key
    assert Recipe(r.release, r.debs, (("pykickstart", "0.1"),), r.programs).key != r.key


def test_the_mirror_comes_from_apt_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("MOAT_MIRROR", raising=False)
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    assert mirror(apt) == "http://deb.debian.org/debian"  # nothing configured: Debian's redirector
    (apt / "sources.list").write_text("deb http://security.example/debian-security bookworm-security main\n"
                                      "deb [arch=amd64] http://one.example/debian/ bookworm main\n")
    assert mirror(apt) == "http://one.example/debian"
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://two.example/debian\nSuites: bookworm bookworm-updates\n")
    assert mirror(apt) == "http://two.example/debian"  # deb822 first, as apt reads it
    monkeypatch.setenv("MOAT_MIRROR", "http://three.example/debian/")
    assert mirror(apt) == "http://three.example/debian"


@pytest.fixture(scope="module")
def tree() -> Path:
    if os.geteuid() != 0:
        pytest.skip("the tools tree is built as root (CI is root)")
    return toolset("tree", progress=print).tree


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("tree-bundles")
    return {bp.stem: build_file(bp, out / bp.stem, tools=False)[1].path for bp in EXAMPLES}


def inside(tree: Path, bundle: Path, script: str) -> subprocess.CompletedProcess:
    script = script.replace("{file}", f"{BUNDLE_MOUNT}/blueprint.yaml")
    cmd = enter.command(tree, bundle, VERIFY_TOOLS, ["sh", "-c", script])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_a_check_sees_the_tree_the_bundle_read_only_and_an_empty_tmp(tree, bundles):
    bundle = bundles["example"]
    result = inside(tree, bundle, "grep VERSION_CODENAME /etc/os-release; cat {file} | head -n 1; "
                                  "ls -A /tmp | wc -l; echo x >/tmp/scratch && echo tmp-writable; "
                                  "touch /moat/bundle/new 2>/dev/null || echo bundle-read-only; "
                                  f"test -e {ROOT} || echo checkout-invisible; ls /moat/verify_tools | wc -l; "
                                  "echo pid $$; command -v ksvalidator")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    first = (bundle / "blueprint.yaml").read_text().splitlines()[0]
    assert lines[:2] == ["VERSION_CODENAME=bookworm", first]
    assert lines[2:5] == ["0", "tmp-writable", "bundle-read-only"]
    assert lines[5] == "checkout-invisible"
    assert int(lines[6]) == len(list(VERIFY_TOOLS.iterdir()))
    assert lines[7] == "pid 1", "its own pid namespace: nothing it starts outlives it"
    assert lines[8] == "/usr/local/bin/ksvalidator"
    assert str(tree) not in Path("/proc/self/mountinfo").read_text(), "no mount of the tree is left behind"
    assert not list(Path(bundle).glob("new"))


def test_the_tree_is_what_the_recipe_says(tree):
    import json

    meta = json.loads((tree / METADATA).read_text())
    r = tools_recipe()
    assert meta["key"] == r.key == tree.name and meta["debs"] == list(r.debs)
    installed = dict(line.split("\t") for line in (tree / "etc/moat-tools.debs").read_text().splitlines())
    assert set(r.debs) <= set(installed)
    assert not list((tree / "etc/ssh").glob("ssh_host_*")), "no host key is shared by every check"


@pytest.mark.parametrize("name", [bp.stem for bp in EXAMPLES])
def test_every_validator_in_the_tree_agrees_with_this_machines(tree, bundles, name, tmp_path, monkeypatch):
    monkeypatch.setenv("MOAT_CACHE_DIR", str(tmp_path / "cache"))
    in_tree = run_validators(bundles[name], cache=False, tree=tree)
    on_host = run_validators(bundles[name], cache=False)
    assert [(f.path, f.validator) for f in in_tree] == [(f.path, f.validator) for f in on_host]
    assert len(in_tree) >= 15
    assert [f for f in in_tree if not f.ok] == [], "a file the tree's tools reject"
    assert [f for f in on_host if not f.ok] == []


def _writable_copy(bundle, copy):
    """A copy of a (read-only) store path whose directories can take edited files."""
    import shutil

    shutil.copytree(bundle, copy)
    for dirpath, _dirs, _files in os.walk(copy):
        os.chmod(dirpath, 0o755)
    return copy


def test_a_broken_file_is_rejected_in_the_tree_at_its_line(tree, bundles, tmp_path, monkeypatch):
    monkeypatch.setenv("MOAT_CACHE_DIR", str(tmp_path / "cache"))
    copy = _writable_copy(bundles["example"], tmp_path / "bundle")
    nft = copy / "host/nftables/moat.nft"
    os.chmod(nft, 0o644)
    lines = nft.read_text().splitlines()
    at = len(lines)
    nft.write_text("\n".join([*lines, "table inet moat { chain x { tcp dport 22 acceptt } }"]) + "\n")
    found = [f for f in run_validators(copy, cache=False, tree=tree) if f.path == "host/nftables/moat.nft"]
    assert found and not found[0].ok
    assert str(nft) in found[0].output and "/moat/bundle" not in found[0].output
    assert at + 1 in found[0].lines(nft)


def test_verify_tools_uses_the_tree_as_builds_do(tree, tmp_path):
    from .conftest import run_moat

    out = tmp_path / "out"
    assert run_moat("build", ROOT / "blueprints" / "example.yaml", "--out", out).returncode == 0
    in_tree = run_moat("verify", "--tools", out / "current", env={"MOAT_CACHE_DIR": str(tmp_path / "a")})
    assert in_tree.returncode == 0, in_tree.stderr
    assert f"tools: tools tree {tree}" in in_tree.stdout and "ok    host/nftables/moat.nft" in in_tree.stdout
    on_host = run_moat("verify", "--tools", "--host-tools", out / "current", env={"MOAT_CACHE_DIR": str(tmp_path / "b")})
    assert on_host.returncode == 0, on_host.stderr
    assert "tools: this machine" in on_host.stdout
    assert sorted(line for line in in_tree.stdout.splitlines() if line.startswith("ok ")) \
        == sorted(line for line in on_host.stdout.splitlines() if line.startswith("ok "))


@AS_ROOT
def test_without_root_moat_uses_this_machines_tools_and_says_how_to_get_the_tree():
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="moat-nobody."))  # pytest's tmp is root's only
    try:
        _decide_as_nobody(work)
    finally:
        shutil.rmtree(work)


def _decide_as_nobody(work: Path) -> None:
    import shutil
    import sysconfig

    os.chmod(work, 0o755)
    # the checkout (and its .venv) may be private to root, as a fresh `mktemp -d` clone is: nobody
    # gets its own copy of moat and of the venv's packages, run by the interpreter the venv uses
    lib = work / "lib"
    shutil.copytree(ROOT / "compiler", lib / "compiler")
    shutil.copytree(sysconfig.get_paths()["purelib"], lib / "site", symlinks=True)
    os.chown(work, 65534, 65534)
    env = {"PATH": os.environ["PATH"], "HOME": str(work), "MOAT_TOOLS_DIR": str(work / "tools"),
           "MOAT_CACHE_DIR": str(work / "cache"), "PYTHONPATH": f"{lib}:{lib / 'site'}"}
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", os.path.realpath(sys.executable)]
    decided = subprocess.run([*nobody, "-c", "from compiler.verify import toolset; t = toolset(); "
                              "print(t.tree); [print(d.severity, d.rule, d.message, d.hint, sep='|') for d in t.notes]"],
                             cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert decided.returncode == 0, decided.stderr
    lines = decided.stdout.splitlines()
    assert lines[0] == "None", "no tree: the machine's tools"
    assert len(lines) == 2 and lines[1].startswith("warning|tools-tree|") and "needs root" in lines[1]
    assert "sudo moat tools build" in lines[1]
    status = subprocess.run([*nobody, "-m", "compiler.cli", "tools", "status"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 1 and "not built" in status.stdout and "needs root" in status.stdout, status
    assert not (work / "tools").exists(), "nothing was built, nothing half-written"


# --- crash safety of the build: a small recipe, killed at each step --------------------------

SMALL = Recipe("bookworm", ("bash",), (), ("bash",))


def _build_in_child(env: dict) -> subprocess.Popen:
    code = ("import sys; from compiler.tools_tree.build import build; from compiler.tools_tree.recipe import Recipe; "
            "build(Recipe('bookworm', ('bash',), (), ('bash',)), lambda l: print(l, flush=True))")
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _leftovers(path: Path) -> list[str]:
    """Processes and mounts that still name a path (give the kernel a moment to reap)."""
    for _ in range(50):
        found = [line for line in Path("/proc/mounts").read_text().splitlines() if str(path) in line]
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if str(path) in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                    found.append(f"pid {pid}")
            except OSError:
                pass
        if not found:
            return []
        time.sleep(0.2)
    return found


@AS_ROOT
@pytest.mark.slow
def test_a_build_killed_at_each_step_leaves_no_tree_and_the_next_converges(tmp_path, monkeypatch):
    tools = tmp_path / "tools"
    # the .debs the machine's tree was built from: downloads once per machine, never the result
    debs = os.environ.get("MOAT_DEBOOTSTRAP_CACHE") or str(cache_root() / "debs")
    env = {**os.environ, "MOAT_TOOLS_DIR": str(tools), "MOAT_DEBOOTSTRAP_CACHE": debs}
    # late (the small recipe's last steps take a blink: killed there, or just finished), then in
    # the middle of debootstrap and of apt-get (deterministic: each takes tens of seconds)
    for step, pause in (("step 4/5", 0.0), ("step 5/5", 0.0), ("step 1/5", 1.0), ("step 2/5", 1.0)):
        child = _build_in_child(env)
        seen = []
        assert child.stdout is not None
        for line in child.stdout:
            seen.append(line)
            if step in line:
                time.sleep(pause)
                os.kill(child.pid, signal.SIGKILL)
                break
        child.wait(timeout=60)
        tree = tools / SMALL.key
        assert _leftovers(tools) == [], f"killed at {step}"
        if child.returncode == 0:  # it finished before the kill: then it is whole
            assert step in ("step 4/5", "step 5/5") and (tree / METADATA).is_file() and (tree / "usr/bin/bash").exists()
            import shutil

            shutil.rmtree(tree)
            continue
        assert child.returncode == -signal.SIGKILL, "".join(seen)
        assert not tree.exists(), f"killed at {step}: a tree that was never finished"
    assert list(tools.glob(".tmp-*")), "the killed build's leftover is there for the next one to remove"
    monkeypatch.setenv("MOAT_TOOLS_DIR", str(tools))
    monkeypatch.setenv("MOAT_DEBOOTSTRAP_CACHE", debs)
    built = tree_build.build(SMALL)
    assert built == tools / SMALL.key and (built / METADATA).is_file()
    assert (built / "usr/bin/bash").exists()
    assert not list(tools.glob(".tmp-*")), "the next build removed what the killed ones left"
    assert tree_build.build(SMALL) == built  # built once: the second is a lookup


def test_a_build_enters_the_tree_once_per_worker_not_once_per_check(tree, bundles, tmp_path, monkeypatch):
    monkeypatch.setenv("MOAT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MOAT_VERIFY_WORKERS", "2")
    entries = []
    real = enter.command
    monkeypatch.setattr(enter, "command", lambda *args: entries.append(args) or real(*args))
    copy = _writable_copy(bundles["example"], tmp_path / "bundle")
    domain = copy / "host/libvirt/domains/vpn.xml"
    os.chmod(domain, 0o644)
    domain.write_text(domain.read_text().replace("<vcpu", "<vcpus").replace("</vcpu>", "</vcpus>"))
    found = run_validators(copy, cache=False, tree=tree)
    assert len(found) >= 15 and 1 <= len(entries) <= 2, len(entries)
    # each check still judged on its own: the broken domain rejected with its own words, the rest passed
    rejected = [f for f in found if not f.ok]
    assert [f.path for f in rejected] == ["host/libvirt/domains/vpn.xml"], rejected
    assert "vcpus" in rejected[0].output and str(copy) in rejected[0].output, rejected[0].output
    assert str(tree) not in Path("/proc/self/mountinfo").read_text(), "no mount of the tree is left behind"
