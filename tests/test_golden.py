"""Each example's bundle is reproduced byte for byte from the committed golden files."""

from __future__ import annotations

import difflib

import pytest

from .golden import EXAMPLES, GOLDEN, expected_files, golden_files


@pytest.mark.parametrize("blueprint", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_bundle_matches_golden_files(blueprint):
    assert (GOLDEN / blueprint.stem).is_dir(), "no golden files yet: run `make golden` and review them"
    want = golden_files(blueprint.stem)
    got = expected_files(blueprint)
    assert sorted(got) == sorted(want), "files added or removed: run `make golden` and review the diff"
    for path in sorted(got):
        if got[path] != want[path]:
            diff = "\n".join(difflib.unified_diff(want[path].decode(errors="replace").splitlines(),
                                                  got[path].decode(errors="replace").splitlines(),
                                                  f"golden/{path}", f"built/{path}", lineterm=""))
            pytest.fail(f"{path} differs from its golden file (run `make golden` if intended):\n{diff[:3000]}")
