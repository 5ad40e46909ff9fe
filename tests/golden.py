"""Golden bundles: the generated files of each example, committed so reviews show every change.

Update after an intended change with `make golden` (this module as a script), then review
`git diff tests/golden/` like any other change.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
EXAMPLES = sorted((ROOT / "blueprints").glob("*.yaml"))
MASKED = "<masked: changes with the compiler's code>"


def expected_files(blueprint: Path) -> dict[str, bytes]:
    """The bundle of a blueprint as golden files: every file, the manifest's volatile fields masked."""
    sys.path.insert(0, str(ROOT))
    from compiler.pipeline import check_file
    from compiler.store import manifest

    compiled = check_file(blueprint)
    files = {path: out.content for path, out in compiled.files.items()}
    meta = json.loads(manifest(compiled.files, compiled.meta))
    meta["store_hash"] = MASKED
    meta["compiler"]["sha256"] = MASKED
    files["manifest.json"] = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    return files


def golden_files(name: str) -> dict[str, bytes]:
    root = GOLDEN / name
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def update() -> None:
    for blueprint in EXAMPLES:
        target = GOLDEN / blueprint.stem
        shutil.rmtree(target, ignore_errors=True)
        for rel, content in expected_files(blueprint).items():
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        print(f"wrote {target.relative_to(ROOT)}")
    update_changes()


def update_changes() -> None:
    """The markdown `moat diff` prints for each pair of tests/change_cases.py."""
    import tempfile

    from tests.change_cases import CASES, GOLDEN as CHANGES, markdown

    shutil.rmtree(CHANGES, ignore_errors=True)
    CHANGES.mkdir(parents=True)
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            (CHANGES / f"{case.name}.md").write_text(markdown(case, Path(tmp)))
    print(f"wrote {CHANGES.relative_to(ROOT)} ({len(CASES)} changes)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    update()
