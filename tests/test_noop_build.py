"""`moat build` of inputs it has built before names the store path without compiling, Nix-style:
the key is the bytes of the blueprint and its image lock, the compiler, and whether the result was
vetted by the real validators (store.recall, identity.input_key)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from .conftest import FIXTURES, ROOT, run_moat

# a build in a process that reports afterwards how many times it compiled and stored the blueprint
# (a new generation's one-line summary compiles both sides for the comparison: not counted)
COUNTING = ("import sys; from compiler import pipeline; build_file = pipeline.build_file; n = []; "
            "pipeline.build_file = lambda *a, **k: n.append(1) or build_file(*a, **k); "
            "from compiler.cli import main; code = main(sys.argv[1:]); print(f'compiled {len(n)}'); sys.exit(code)")
# ... and one that reports whether the pipeline was even imported
IMPORTS = ("import sys; from compiler.cli import main; code = main(sys.argv[1:]); "
           "print('pipeline loaded' if 'compiler.pipeline' in sys.modules else 'pipeline not loaded'); sys.exit(code)")


def build(*args, cache, probe=COUNTING) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", probe, "build", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "MOAT_CACHE_DIR": str(cache)}, timeout=600)


def test_the_same_inputs_name_their_store_path_without_compiling(tmp_path):
    bp = tmp_path / "base.yaml"
    shutil.copy(FIXTURES / "base.yaml", bp)
    out, cache = tmp_path / "out", tmp_path / "cache"
    first = build(bp, "--out", out, "--no-tools", cache=cache)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("built: ") and "compiled 1" in first.stdout
    again = build(bp, "--out", out, "--no-tools", cache=cache, probe=IMPORTS)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == first.stdout.splitlines()[0].replace("built: ", "unchanged: ").replace(" (new)", "")
    assert "pipeline not loaded" in again.stdout
    # one byte of the blueprint (a comment) is another input: compiled again, another store path
    bp.write_text(bp.read_text() + "# edited\n")
    edited = build(bp, "--out", out, "--no-tools", cache=cache)
    assert edited.stdout.startswith("built: ") and "compiled 1" in edited.stdout, edited.stdout
    assert "generation 2 (new)" in edited.stdout
    # back to the first text: its store path again, as a new generation, still without compiling
    bp.write_text(bp.read_text().removesuffix("# edited\n"))
    back = build(bp, "--out", out, "--no-tools", cache=cache)
    assert "compiled 0" in back.stdout and "generation 3 (new)" in back.stdout, back.stdout
    assert (out / "current").resolve() == (out / "generations" / "1").resolve()
    # an image lock beside the blueprint is an input too
    lock = tmp_path / "base.images.lock"
    lock.write_text("{}\n")
    locked = build(bp, "--out", out, "--no-tools", cache=cache)
    assert "compiled 1" in locked.stdout, locked.stdout + locked.stderr
    lock.unlink()
    # a store path removed by hand is built again
    store_path = out / "store" / first.stdout.split()[1].rsplit("/", 1)[-1]
    for dirpath, _dirs, _files in os.walk(store_path):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(store_path)
    rebuilt = build(bp, "--out", out, "--no-tools", cache=cache)
    assert rebuilt.stdout.startswith("built: ") and "compiled 1" in rebuilt.stdout, rebuilt.stdout


def test_an_unvetted_store_path_is_vetted_before_it_counts_as_validated(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    unvetted = build(FIXTURES / "base.yaml", "--out", out, "--no-tools", cache=cache)
    assert unvetted.returncode == 0, unvetted.stderr
    vetted = build(FIXTURES / "base.yaml", "--out", out, cache=cache)
    assert vetted.returncode == 0, vetted.stderr
    assert "compiled 1" in vetted.stdout and (cache / "verified").is_dir()
    for args in ((), ("--no-tools",)):  # a vetted path serves both
        again = build(FIXTURES / "base.yaml", "--out", out, *args, cache=cache)
        assert "compiled 0" in again.stdout, (args, again.stdout)


def test_a_build_with_warnings_says_them_again(tmp_path):
    bp = tmp_path / "busy.yaml"
    bp.write_text((FIXTURES / "base.yaml").read_text().replace("  cpus: 8\n", "  cpus: 2\n", 1)
                  .replace("    cpus: 2\n", "    cpus: 1\n", 1)
                  .replace("    install: {method: image", "    install: {method: image", 1))
    text = bp.read_text()
    bp.write_text(text.replace("vms:\n", "vms:\n  - name: db\n    cpus: 1\n    memory: 1GiB\n    os_disk: {size: 10GiB}\n"
                               "    nics:\n      - {network: lan, address: 192.168.10.6}\n"
                               "    install: {method: image, image: debian}\n", 1))
    out, cache = tmp_path / "out", tmp_path / "cache"
    for _ in range(2):
        result = build(bp, "--out", out, "--no-tools", cache=cache)
        assert result.returncode == 0, result.stderr
        assert "warning[overcommit-cpu]" in result.stderr, result.stderr
        assert "compiled 1" in result.stdout
    assert run_moat("check", bp).returncode == 0
