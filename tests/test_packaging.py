"""moat as a package: the wheel carries what moat reads at run time, builds without setuptools
warnings, and, installed into a fresh venv, works from any directory with the same store names
as the checkout."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from .conftest import EXAMPLES, ROOT, run_moat

pytestmark = pytest.mark.slow

VERIFY_TOOLS = ROOT / "compiler" / "verify_tools"
TEMPLATES = ROOT / "compiler" / "render" / "templates"


def _run(*cmd, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else dict(os.environ))
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _source_tree(dest: Path) -> Path:
    """The files a clone has (git ls-files), so a build never writes into the checkout."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, listed.decode().split("\0")):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("wheel")
    src = _source_tree(tmp / "src")
    # PYTHONDONTWRITEBYTECODE makes distutils say "byte-compiling is disabled": the caller's choice, not ours
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = _run(sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", tmp / "dist", src, cwd=tmp, env=env)
    (path,) = (tmp / "dist").glob("*.whl")
    return {"path": path, "log": proc.stdout + proc.stderr}


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with only the wheel (and its dependencies) installed: its bin/ directory."""
    venv = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", venv, cwd=venv)
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel["path"], cwd=venv)
    return venv / "bin"


def test_pyproject_lists_every_package_in_the_tree():
    """A package left out of pyproject.toml is missing from the wheel: moat then dies on import,
    installed, while every test run from the checkout passes."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    in_tree = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "compiler").rglob("__init__.py")}
    assert in_tree <= set(config["packages"]), sorted(in_tree - set(config["packages"]))
    assert set(config["packages"]) - in_tree == set(config["package-dir"])


def test_wheel_holds_every_module_of_the_checkout(wheel):
    listed = subprocess.run(["git", "ls-files", "-z", "compiler"], cwd=ROOT, capture_output=True, check=True).stdout
    modules = {rel for rel in listed.decode().split("\0") if rel.endswith(".py")}
    with zipfile.ZipFile(wheel["path"]) as whl:
        assert modules and modules <= set(whl.namelist()), sorted(modules - set(whl.namelist()))


def test_wheel_builds_without_setuptools_warnings(wheel):
    # pip's own lines start with "WARNING:" (e.g. about its index configuration); the build
    # backend's warnings (SetuptoolsDeprecationWarning, "Package would be ignored", distutils'
    # "warning:") come through -v indented or bare
    warnings = [line for line in wheel["log"].splitlines()
                if "warning" in line.lower() and not line.startswith("WARNING: ")]
    assert warnings == []
    assert wheel["path"].name.startswith("moat_blueprint-")


def test_wheel_holds_schema_templates_and_runnable_validator_scripts(wheel):
    with zipfile.ZipFile(wheel["path"]) as whl:
        infos = {i.filename: i for i in whl.infolist()}
        assert whl.read("compiler/schema_data/blueprint.schema.json") == (ROOT / "schema/blueprint.schema.json").read_bytes()
        templates = {p.relative_to(ROOT).as_posix() for p in TEMPLATES.rglob("*") if p.is_file()}
        assert templates and templates <= set(infos)
        scripts = sorted(VERIFY_TOOLS.glob("*.sh"))
        assert scripts
        for script in scripts:
            info = infos[f"compiler/verify_tools/{script.name}"]
            # the zip keeps the checkout's executable bit, which pip restores on install
            assert bool((info.external_attr >> 16) & stat.S_IXUSR) == os.access(script, os.X_OK), script.name
        license_text = [whl.read(n) for n in infos if n.endswith(".dist-info/licenses/LICENSE")]
        assert license_text == [(ROOT / "LICENSE").read_bytes()]
        metadata = next(whl.read(n).decode() for n in infos if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in metadata
    assert "Requires-Dist: pykickstart" in metadata


def test_installed_validator_scripts_are_executable(installed):
    (site,) = (installed.parent / "lib").glob("python3*/site-packages")
    for script in VERIFY_TOOLS.glob("*.sh"):
        assert os.access(site / "compiler" / "verify_tools" / script.name, os.X_OK) == os.access(script, os.X_OK)
    # the runtime validator's Python package came with moat
    assert (installed / "ksvalidator").exists()


def _store_name(out: Path) -> str:
    return os.readlink(out / "current").rstrip("/").rsplit("/", 1)[-1]


def test_installed_moat_works_from_another_directory(installed, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    moat = installed / "moat"
    env = {**os.environ, "PATH": f"{installed}:{os.environ['PATH']}"}
    assert "exit codes" in _run(moat, "--help", cwd=work, env=env).stdout
    for example in EXAMPLES:
        shutil.copy(example, work / example.name)
    checked = _run(moat, "check", *(p.name for p in EXAMPLES), cwd=work, env=env)
    assert checked.stdout.count(": ok (") == len(EXAMPLES)
    for example in EXAMPLES:
        out = f"out-{example.stem}"
        _run(moat, "build", "--no-tools", example.name, "--out", out, cwd=work, env=env)
        reference = tmp_path / f"checkout-{example.stem}"
        proc = run_moat("build", "--no-tools", example, "--out", reference)
        assert proc.returncode == 0, proc.stderr
        # nothing machine-specific (checkout or site-packages path) reaches the store hash
        assert _store_name(work / out) == _store_name(reference)
        store = (work / out / "current").resolve()
        leaked = [p for p in store.rglob("*") if p.is_file() and str(installed.parent).encode() in p.read_bytes()]
        assert leaked == []

    # moat iso takes ./secrets when --secrets is not given, and says so
    none_yet = subprocess.run([moat, "iso", "--out", "out-example"], cwd=work, env=env, capture_output=True, text=True)
    assert none_yet.returncode == 1 and "moat iso: no secrets directory (secrets does not exist" in none_yet.stderr
    _run(moat, "secrets", "init", "example.yaml", cwd=work, env=env)
    assert (work / "secrets" / "host-luks").is_file()
    media = _run(moat, "iso", "--out", "out-example", cwd=work, env=env)
    assert "moat iso: secrets from secrets (found" in media.stderr
    assert "secrets: host-luks" in media.stdout
    media_dir = work / "out-example" / "iso" / "example"  # each blueprint's media in a folder of its own
    assert len(list(media_dir.glob("*.iso"))) >= 2  # the host's medium and the VMs' seeds
