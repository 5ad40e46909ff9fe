"""Validators at scale: a check accepts what the consuming tool accepts on the host.

A 1000-VM blueprint (bench/synthetic.py) renders a host ruleset of ~200 KB. nft sends it to the
kernel in one netlink batch; in a user namespace nft cannot raise its socket buffer above
net.core.wmem_max and fails "Message too long", while the host, as root, loads it. The
validator runs nft the way the host does as root; for a user who is not root it loads the same
statements in several transactions (verify_tools/nft-pieces.py), which must end in the same
ruleset and still find a mistake at its line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from compiler.pipeline import check_file
from compiler.verify import run_validators, toolset

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import synthetic  # noqa: E402

NFT = "host/nftables/moat.nft"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_ruleset(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("scale")
    blueprint = tmp / "big.yaml"
    blueprint.write_text(synthetic.blueprint(1000))
    content = check_file(blueprint).files[NFT].content
    root = tmp / "bundle"
    (root / NFT).parent.mkdir(parents=True)
    (root / NFT).write_bytes(content)
    return root


def test_the_ruleset_is_beyond_what_a_user_namespace_can_send(big_ruleset):
    """The premise: the file is large enough that a user-namespace nft rejects it."""
    said = subprocess.run(["unshare", "--map-root-user", "--net", "nft", "--check", "--file", str(big_ruleset / NFT)],
                          capture_output=True, text=True)
    assert said.returncode != 0 and "Message too long" in said.stderr, said.stderr


@pytest.mark.parametrize("where", ["machine", "tools-tree"])
def test_nft_validator_accepts_the_1000_vm_ruleset_as_the_host_does(big_ruleset, where):
    tree = toolset("tree").tree if where == "tools-tree" else None
    findings = [f for f in run_validators(big_ruleset, cache=False, tree=tree) if f.validator.tool == "nft"]
    assert findings, "no nft validator ran on the ruleset"
    assert all(f.ok for f in findings), "\n".join(f.output for f in findings)
    # the host loads it as root in a network namespace of its own: so does the check
    loaded = subprocess.run(["unshare", "--net", "nft", "--check", "--file", str(big_ruleset / NFT)],
                            capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr


NOT_ROOT = {"nobody": ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
            # root of a user namespace: how the validators run in the tools tree entered without root
            "user-namespace-root": ["unshare", "--map-root-user"]}


def _as_nobody(ruleset: bytes, who: str = "nobody") -> subprocess.CompletedProcess:
    """firewall-nft.sh run by a user who is not root, on a copy nobody can read (pytest's own
    temporary directories are root's alone)."""
    with tempfile.TemporaryDirectory(prefix="moat-nobody-") as shared:
        os.chmod(shared, 0o755)
        path = Path(shared) / "moat.nft"
        path.write_bytes(ruleset)
        path.chmod(0o644)
        # the wrappers too: the checkout may be in a directory only its owner can enter
        tools = Path(shared) / "verify_tools"
        shutil.copytree(ROOT / "compiler" / "verify_tools", tools, ignore=shutil.ignore_patterns("__pycache__"))
        for entry in (tools, *tools.iterdir()):
            entry.chmod(0o755)
        return subprocess.run([*NOT_ROOT[who], "sh", str(tools / "firewall-nft.sh"), str(path)], capture_output=True,
                              text=True, cwd=shared, timeout=120)


@pytest.mark.parametrize("who", NOT_ROOT)
def test_a_user_who_is_not_root_checks_the_1000_vm_ruleset_too(big_ruleset, who):
    said = _as_nobody((big_ruleset / NFT).read_bytes(), who)
    assert said.returncode == 0, said.stderr


def test_not_root_a_mistake_late_in_the_big_ruleset_is_still_found_at_its_line(big_ruleset):
    lines = (big_ruleset / NFT).read_text().splitlines(keepends=True)
    late = max(i for i, line in enumerate(lines) if line.rstrip().endswith("ct status dnat accept"))
    lines[late] = lines[late].replace("ct status dnat accept", "ct status dnat acept")
    said = _as_nobody("".join(lines).encode())
    assert said.returncode != 0
    assert f"moat.nft:{late + 1}:" in said.stderr and "acept" in said.stderr, said.stderr


def test_the_pieces_load_the_very_ruleset_the_whole_file_loads(big_ruleset):
    """Cut into transactions (as a user namespace needs), the ruleset is the same as loaded whole."""
    pieces = ROOT / "compiler" / "verify_tools" / "nft-pieces.py"
    listed = {}
    for how, load in {"whole": f"nft -f {big_ruleset / NFT}",
                      "pieces": f"{sys.executable} {pieces} {big_ruleset / NFT} 100"}.items():
        said = subprocess.run(["unshare", "--net", "sh", "-c", f"{load} && nft list ruleset"],
                              capture_output=True, text=True, timeout=120)
        assert said.returncode == 0, said.stderr
        listed[how] = said.stdout
    assert listed["pieces"] == listed["whole"] and listed["whole"].count("accept") > 1000
