"""The content-addressed store: same input same path, read-only, manifest, atomic generations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.diagnostics import MoatError
from compiler.pipeline import build_file
from compiler.store import verify

from .conftest import FIXTURES, ROOT, run_moat

EXAMPLE = ROOT / "blueprints" / "example.yaml"


def files_of(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_same_blueprint_same_store_path_and_bytes(tmp_path):
    _, first = build_file(EXAMPLE, tmp_path / "a")
    _, second = build_file(EXAMPLE, tmp_path / "b")
    assert first.path.name == second.path.name
    assert files_of(first.path) == files_of(second.path)


def test_rebuild_is_a_no_op(tmp_path):
    _, first = build_file(EXAMPLE, tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in first.path.rglob("*")}
    _, again = build_file(EXAMPLE, tmp_path)
    assert not again.created and not again.generation_created
    assert again.generation == first.generation == 1
    assert {p: p.stat().st_mtime_ns for p in again.path.rglob("*")} == mtimes
    assert sorted(os.listdir(tmp_path / "generations")) == ["1"]


def test_store_is_read_only_with_a_complete_manifest(tmp_path):
    compiled, stored = build_file(EXAMPLE, tmp_path)
    manifest = json.loads((stored.path / "manifest.json").read_text())
    assert manifest["compiler"]["version"]
    assert manifest["store_hash"] == stored.path.name.split("-", 1)[0]
    on_disk = set(files_of(stored.path)) - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    assert "blueprint.yaml" in on_disk  # the bundle embeds its blueprint
    assert (stored.path / "blueprint.yaml").read_text() == EXAMPLE.read_text()
    for path in stored.path.rglob("*"):
        mode = path.stat().st_mode & 0o777
        assert mode & 0o222 == 0, f"{path} is writable"
    assert verify(stored.path) == []


def test_changed_blueprint_gets_a_new_generation(tmp_path):
    changed = tmp_path / "example.yaml"
    changed.write_text(EXAMPLE.read_text().replace("memory: 2GiB", "memory: 1GiB"))
    _, one = build_file(EXAMPLE, tmp_path / "out")
    _, two = build_file(changed, tmp_path / "out")
    assert one.path != two.path and two.generation == 2
    out = tmp_path / "out"
    assert (out / "current").resolve() == two.path
    assert (out / "generations" / "1").resolve() == one.path
    assert (out / "generations" / "2").resolve() == two.path
    # switching back to an older blueprint reuses its store path under a new generation
    _, three = build_file(EXAMPLE, out)
    assert three.path == one.path and not three.created and three.generation == 3


def test_comment_change_changes_the_store_path(tmp_path):
    commented = tmp_path / "example.yaml"
    commented.write_text(EXAMPLE.read_text() + "# reviewed\n")
    _, one = build_file(EXAMPLE, tmp_path / "out")
    _, two = build_file(commented, tmp_path / "out")
    assert one.path != two.path  # the embedded blueprint differs, so the store path must too


def test_tampered_store_path_is_detected(tmp_path):
    _, stored = build_file(EXAMPLE, tmp_path)
    victim = stored.path / "host" / "libvirt" / "domains" / "nextcloud.xml"
    os.chmod(victim.parent, 0o755)
    os.chmod(victim, 0o644)
    victim.write_text("<domain/>")
    assert any("content changed" in p for p in verify(stored.path))
    with pytest.raises(MoatError) as info:
        build_file(EXAMPLE, tmp_path)
    assert info.value.diagnostics[0].rule == "store-corrupt"
    proc = run_moat("verify", stored.path)
    assert proc.returncode == 1 and "content changed" in proc.stderr


def test_killed_build_leaves_no_store_entry_and_keeps_current(tmp_path):
    out = tmp_path / "out"
    _, first = build_file(FIXTURES / "base.yaml", out)
    marker = tmp_path / "writing"
    # a build that stalls after writing two files, as if the machine stopped mid-write
    script = f"""
import os, time, pathlib, sys
from compiler import store, pipeline
real = os.chmod
count = 0
def slow_chmod(path, mode):  # called once a file is written
    global count
    real(path, mode)
    count += 1
    if count == 2:
        pathlib.Path({str(marker)!r}).write_text("x")
        time.sleep(60)
store.os.chmod = slow_chmod
pipeline.build_file({str(EXAMPLE)!r}, pathlib.Path({str(out)!r}))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "build never started writing"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    entries = [p.name for p in (out / "store").iterdir()]
    assert [e for e in entries if not e.startswith(".tmp-")] == [first.path.name]
    assert any(e.startswith(".tmp-") for e in entries), "the killed build's temporary tree is still there"
    assert (out / "current").resolve() == first.path
    # the next build cleans up after the dead one and succeeds
    _, second = build_file(EXAMPLE, out)
    assert second.created and verify(second.path) == []
    assert not any(p.name.startswith(".tmp-") for p in (out / "store").iterdir())


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    from compiler import store

    out = tmp_path / "out"
    _, first = build_file(FIXTURES / "base.yaml", out)

    def failing(root, files):
        (root / "partial").write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "_write_tree", failing)
    with pytest.raises(MoatError) as info:
        build_file(EXAMPLE, out)
    assert info.value.diagnostics[0].rule == "store-write"
    assert "No space left on device" in info.value.diagnostics[0].message
    assert [p.name for p in (out / "store").iterdir()] == [first.path.name]
    assert (out / "current").resolve() == first.path


@pytest.mark.parametrize("tampered", [False, True], ids=["intact", "tampered"])
def test_a_store_path_put_in_place_meanwhile_is_used_only_when_intact(tmp_path, monkeypatch, tampered):
    """Another build of the same inputs renames the same store path into place between this build's
    look and its rename (tests/test_store_races.py races it for real): intact, it is this build's
    result; not matching its manifest, it is store-corrupt, as when it was there from the start."""
    import shutil

    from compiler import store

    _, elsewhere = build_file(FIXTURES / "base.yaml", tmp_path / "elsewhere", tools=False)
    out = tmp_path / "out"
    rename = os.rename

    def the_other_build_first(src, dst):
        shutil.copytree(elsewhere.path, dst)
        if tampered:
            os.chmod(Path(dst) / "host", 0o755)
            (Path(dst) / "host" / "extra").write_text("x")
        return rename(src, dst)

    monkeypatch.setattr(store.os, "rename", the_other_build_first)
    if tampered:
        with pytest.raises(MoatError) as info:
            build_file(FIXTURES / "base.yaml", out, tools=False)
        assert info.value.diagnostics[0].rule == "store-corrupt"
        assert "host/extra: not in the manifest" in info.value.diagnostics[0].message
        assert not (out / "current").exists()
    else:
        _, stored = build_file(FIXTURES / "base.yaml", out, tools=False)
        assert stored.path.name == elsewhere.path.name and not stored.created
        assert (stored.generation, stored.generation_created) == (1, True)
        assert (out / "current").resolve() == stored.path and verify(stored.path) == []
    assert not list((out / "store").glob(".tmp-*"))


def test_a_tree_is_on_disk_before_it_enters_the_store_in_one_sync(tmp_path):
    """The kernel's own account (strace): the build syncs before the rename that makes its tree a
    store entry, with one syncfs rather than an fsync per file (46 of them for the example)."""
    log = tmp_path / "strace.log"
    traced = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2", "-o", str(log),
         sys.executable, "-m", "compiler.cli", "build", str(ROOT / "blueprints/example.yaml"),
         "--out", str(tmp_path / "out"), "--no-tools"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert traced.returncode == 0, traced.stderr
    calls = [line.split(None, 1)[1] for line in log.read_text().splitlines() if "(" in line]
    entered = next(i for i, c in enumerate(calls) if c.startswith("rename") and "/store/.tmp-" in c)
    syncs = [c for c in calls[:entered] if c.startswith(("fsync", "fdatasync", "syncfs"))]
    assert syncs and all(c.endswith("= 0") for c in syncs), calls[:entered]
    assert len(syncs) <= 2, syncs
