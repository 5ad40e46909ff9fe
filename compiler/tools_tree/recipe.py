"""What the tools tree holds, and the key that names it.

The packages come from the validators' own declarations (Validator.package in each render
family), so a new validator's package joins the tree by being declared. The key is the hash of
everything that decides the tree's contents: release, package lists, PyPI pins and the build
script. The mirror is not part of the key: the same release from another mirror is the same tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import attrs

from ..cached_build import user_cache

RELEASE = "bookworm"  # Debian 12, the distribution moat's validators are tested on
HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
ENTER_SCRIPT = HERE / "enter.sh"
FORMAT = 1  # bumped when the tree's layout changes (mount points, metadata file)

# what the validator scripts themselves run besides the tool they wrap (compiler/verify_tools)
EXTRA_DEBS = (
    "bash",            # kickstart %pre/%post syntax (bash -n)
    "ca-certificates", # pip over https while building
    "iproute2",        # ip: namespaces of the openvpn check
    "iptables",        # firewall-offline-cmd gives up when any firewalld backend is unusable
    "libxml2-utils",   # xmllint, which virt-xml-validate runs
    "openssl",         # throwaway PKI of the haproxy/openvpn checks
    "python3",         # the libnm and cloud-init checks
    "python3-pip",     # installs the PyPI-only validators below
    "python3-requests",
)
# in every tree without being listed: debootstrap --variant=minbase installs them (Priority:
# required). A validator may name one as its package and the tree's key does not change.
MINBASE_DEBS = ("apt", "mawk")
# validators only on PyPI: exact versions, so every tree checks alike
PYPI_PINS = {"pykickstart": "3.78"}

# where the bundle and the validator scripts appear inside the tree (enter.sh mounts them)
BUNDLE_MOUNT = "/moat/bundle"
TOOLS_MOUNT = "/moat/verify_tools"
METADATA = "etc/moat-tools.json"


@attrs.frozen
class Recipe:
    release: str
    debs: tuple[str, ...]
    pypi: tuple[tuple[str, str], ...]
    programs: tuple[str, ...]  # must be found in the tree once built (its self-check)

    @property
    def key(self) -> str:
        h = hashlib.sha256(json.dumps({"format": FORMAT, "release": self.release, "debs": self.debs,
                                       "pypi": self.pypi, "programs": self.programs}).encode())
        h.update(BUILD_SCRIPT.read_bytes())
        return h.hexdigest()[:32]

    def as_json(self) -> dict:
        return {"key": self.key, "release": self.release, "debs": list(self.debs),
                "pypi": dict(self.pypi), "programs": list(self.programs)}


def recipe(validators) -> Recipe:
    """The tree that the given validators (verify.validators(): every render family's) need."""
    debs: set[str] = set(EXTRA_DEBS)
    pypi: dict[str, str] = {}
    programs: set[str] = set()
    for v in validators:
        for package in v.package.split():
            if package.startswith("pypi:"):
                name = package[5:]
                pypi[name] = PYPI_PINS[name]
            elif package not in MINBASE_DEBS:
                debs.add(package)
        if not v.command[0].startswith("/"):
            programs.add(v.command[0])
        if v.tool != v.command[0] or not v.tool.startswith("/"):  # a wrapper script is no program
            programs.add(os.path.basename(v.tool))
    return Recipe(RELEASE, tuple(sorted(debs)), tuple(sorted(pypi.items())), tuple(sorted(programs)))


def cache_root() -> Path:
    """Where trees live: $MOAT_TOOLS_DIR, else $XDG_CACHE_HOME/moat/tools, else ~/.cache/moat/tools.

    Apart from the validation cache (MOAT_CACHE_DIR): a test run may start with an empty
    validation cache and still reuse the machine's tree.
    """
    return user_cache("MOAT_TOOLS_DIR", "tools")


_SOURCES = re.compile(r"^URIs:\s*(\S+)", re.M)
_LIST = re.compile(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", re.M)


def mirror(etc: Path = Path("/etc/apt")) -> str:
    """The Debian mirror: $MOAT_MIRROR, else the first Debian archive in this machine's apt sources."""
    if os.environ.get("MOAT_MIRROR"):
        return os.environ["MOAT_MIRROR"].rstrip("/")
    found: list[str] = []
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        found += _SOURCES.findall(path.read_text(errors="replace"))
    for path in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]:
        if path.exists():
            found += [uri for uri, suite in _LIST.findall(path.read_text(errors="replace"))
                      if "security" not in suite]
    for uri in found:
        if uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    return "http://deb.debian.org/debian"
