"""What a start of moat keeps between runs (compiled templates) never changes what it says, and
what a `moat check` does not load at all (Jinja2, jsonschema, ruamel.yaml: for a valid blueprint)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT


EXAMPLE = str(ROOT / "blueprints" / "example.yaml")


def _build(cache: str, out: Path) -> tuple[subprocess.CompletedProcess, list[tuple[str, bytes]]]:
    """A build that renders (a fresh out/, so no earlier store path is reused), and what it stored."""
    env = {**os.environ, "MOAT_CACHE_DIR": cache}
    proc = subprocess.run([sys.executable, "-m", "compiler.cli", "build", "--no-tools", "--out", str(out), EXAMPLE],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    stored = sorted((str(p.relative_to(out / "store")), p.read_bytes())
                    for p in (out / "store").rglob("*") if p.is_file()) if proc.returncode == 0 else []
    return proc, stored


def test_compiled_templates_are_kept_and_a_broken_cache_is_only_slower(tmp_path):
    cache = tmp_path / "cache"
    first, bundle = _build(str(cache), tmp_path / "out1")
    assert first.returncode == 0 and bundle, first.stderr
    kept = sorted((cache / "jinja").iterdir())
    assert len(kept) >= 20, kept  # one per template the example renders
    for file in kept:  # truncated and garbled entries, as a crash or a full disk leaves them
        file.write_bytes(file.read_bytes()[: len(file.read_bytes()) // 2] + b"\xff garbage")
    again, rebuilt = _build(str(cache), tmp_path / "out2")
    assert again.returncode == 0, again.stderr
    assert rebuilt == bundle
    # a cache that cannot be written at all (a file where the directory should be)
    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    third, built = _build(str(blocked), tmp_path / "out3")
    assert third.returncode == 0, third.stderr
    assert built == bundle and third.stderr == first.stderr


def test_a_check_stops_before_the_render_stage_and_imports_no_jsonschema_for_a_valid_blueprint(tmp_path):
    def imported(*argv: str) -> set[str]:
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "compiler.cli", "check", *argv],
                              capture_output=True, text=True, cwd=ROOT, timeout=120,
                              env={**os.environ, "MOAT_CACHE_DIR": str(tmp_path / "cache")})
        return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}

    valid = imported(EXAMPLE)
    assert "compiler.model" in valid and "compiler.derive" in valid  # it did run the stages up to derive
    assert not {"jinja2", "jsonschema", "compiler.render", "compiler.store", "compiler.verify"} & valid
    # libyaml reads it, and every plain scalar in it is typed without ruamel.yaml's resolver (load_libyaml)
    assert "ruamel.yaml" not in valid
    # what only a build (children, cached_build), an error (difflib's suggestions) or another command needs
    assert not {"subprocess", "ctypes", "difflib", "compiler.deploy.commands"} & valid
    # a blueprint that breaks the schema is explained by jsonschema
    broken = tmp_path / "broken.yaml"
    broken.write_text(Path(EXAMPLE).read_text().replace("version: 1", "version: 2", 1))
    assert "jsonschema" in imported(str(broken))


def test_the_cyclic_collector_is_paused_while_a_blueprint_is_compiled_and_on_again_after(tmp_path):
    import gc

    from compiler.diagnostics import MoatError
    from compiler.pipeline import check_file, checked_file

    stages = {"load_file", "check_source", "compile_source"}
    during: list[str] = []  # collections started inside a stage
    seen: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase != "start":
            return
        seen.append(info["generation"])
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_name in stages:
                during.append(frame.f_code.co_name)
                return
            frame = frame.f_back

    broken = tmp_path / "broken.yaml"
    broken.write_text(Path(EXAMPLE).read_text().replace("name:", "nmae:", 1))
    gc.callbacks.append(count)
    try:
        for compile_ in (checked_file, check_file):
            assert compile_(EXAMPLE).plan.blueprint.vms  # thousands of objects made, none collected meanwhile
            assert during == [] and gc.isenabled()
            try:
                compile_(broken)
            except MoatError:
                pass
            else:
                raise AssertionError("a misspelt key passed")
            assert during == [] and gc.isenabled()  # on again after an error too
        gc.disable()
        checked_file(EXAMPLE)
        assert not gc.isenabled()  # left off when the caller had it off
    finally:
        gc.enable()
        gc.callbacks.remove(count)
    assert seen, "the callback never saw a collection: the test proves nothing"
