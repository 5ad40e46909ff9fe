"""The VPS front's TLS, judged by sslyze against Mozilla's "intermediate" profile (the one
render/vps.py follows): the generated HAProxy config, unchanged but for the certificates' directory
and the log, runs in a network namespace (the VPS) and sslyze scans each site from another (a
client on the Internet). Protocol versions, cipher suites, key-exchange groups and the certificate
are all checked; sslyze's own verdict line is what the test reads.

The certificates come from a throwaway CA (no ACME), handed to sslyze as an extra trust store, so
a chain that does not validate fails the check too. Let's Encrypt issues 90-day ECDSA P-256 or
RSA 2048 certificates, as the profile asks; the test CA's are P-256.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from compiler.pipeline import check_file

from .test_vps import CFG
from .test_vps_tunnel import BLUEPRINT, SITES, VPS_ADDRESS, Lab, start_haproxy

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces"), pytest.mark.slow]

SSLYZE = Path(sys.executable).parent / "sslyze"  # the test extra's (pyproject.toml)


@pytest.fixture
def front(tmp_path):
    """HAProxy with vps-front.yaml's generated config on the VPS; the client namespace to scan from."""
    files = {p: o.content.decode() for p, o in check_file(BLUEPRINT).files.items()}
    lab = Lab(tmp_path, roles=("client", "vps"))
    try:
        lab.wire()
        lab.log = tmp_path / "haproxy.log"
        lab.ca = start_haproxy(lab, files[CFG], SITES, lab.log)
        yield lab
    finally:
        lab.close()


def sslyze(lab: Lab, site: str) -> str:
    """sslyze's report for `site` on the VPS's address (SNI and certificate name: the site)."""
    r = lab.run("client", str(SSLYZE), "--mozilla_config=intermediate", "--certinfo_ca_file", str(lab.ca),
                f"{site}:443{{{VPS_ADDRESS}}}", timeout=600)
    return r.stdout + r.stderr


@pytest.mark.parametrize("site", SITES)
def test_each_site_is_mozilla_intermediate_compliant(front, site):
    report = sslyze(front, site)
    verdict = re.search(r"^\s*\S+: (OK - Compliant|FAILED - Not compliant)\.?$", report, re.M)
    assert verdict, f"no Mozilla verdict in sslyze's report:\n{report}"
    # every issue sslyze found is listed under the verdict: the report is the failure message
    assert verdict.group(1) == "OK - Compliant", report
    # the scan reached the site: its own certificate, validated against the test CA
    assert re.search(rf"^\s*Verified Chain:\s+{re.escape(site)} --> moat-test-ca$", report, re.M), report
    # the key-exchange groups offered are exactly render/vps.py's (sslyze names prime256v1 secp256r1)
    curves = re.search(r"^\s*Supported curves:\s+(.*)$", report, re.M)
    assert curves and set(curves.group(1).split(", ")) == {"X25519", "secp256r1", "secp384r1"}, report
    print(f"\n{verdict.group(0).strip()} ({curves.group(0).strip()})")

