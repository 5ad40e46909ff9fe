"""Validators at scale: a check accepts what the consuming tool accepts on the host.

A 1000-VM blueprint (bench/synthetic.py) renders a host ruleset of ~200 KB. nft sends it to the
kernel in one netlink batch; in a user namespace nft cannot raise its socket buffer above
net.core.wmem_max and fails "Message too long", while the host, as root, loads it. The
validator must run nft the way the host does.
"""

from __future__ import annotations

import subprocess
import sys
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
