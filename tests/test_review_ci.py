"""docs/ci/: the GitHub Actions workflow that reviews blueprint pull requests, and the script it
runs, for real: a git repository with a pull request's branch, the script run twice against a
GitHub API stand-in on loopback (issue comments: list, create, update): the first push posts
one comment, the second updates that same comment in place."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ruamel.yaml import YAML

from .change_cases import CASES, edited
from .conftest import ROOT

WORKFLOW = ROOT / "docs" / "ci" / "moat-review.yml"
SCRIPT = ROOT / "docs" / "ci" / "moat-pr-comment.sh"


class Comments(BaseHTTPRequestHandler):
    """GET/POST /repos/O/R/issues/N/comments and PATCH /repos/O/R/issues/comments/ID."""

    store: dict[int, str] = {}
    log: list[tuple[str, str]] = []

    def _reply(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != "Bearer t0ken":
            self._reply(401, {"message": "Bad credentials"})
            return False
        return True

    def do_GET(self):  # noqa: N802
        self.log.append(("GET", self.path))
        if self._authorized():
            self._reply(200, [{"id": i, "body": b} for i, b in sorted(self.store.items())])

    def do_POST(self):  # noqa: N802
        self.log.append(("POST", self.path))
        if self._authorized() and self.path == "/repos/me/home/issues/7/comments":
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["body"]
            new = 100 + len(self.store)
            self.store[new] = body
            self._reply(201, {"id": new})

    def do_PATCH(self):  # noqa: N802
        self.log.append(("PATCH", self.path))
        if self._authorized():
            comment = int(self.path.rsplit("/", 1)[1])
            self.store[comment] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["body"]
            self._reply(200, {"id": comment})

    def log_message(self, *args):
        pass


def test_the_workflow_runs_the_script_with_what_it_needs():
    flow = YAML(typ="safe").load(WORKFLOW.read_text())
    assert flow["permissions"]["pull-requests"] == "write"
    assert flow[True if True in flow else "on"]["pull_request"]["paths"] == ["blueprints/**"]
    steps = flow["jobs"]["review"]["steps"]
    assert steps[0]["with"]["fetch-depth"] == 0
    runs = [s.get("run", "") for s in steps]
    assert any("moat check blueprints/*.yaml" in r for r in runs)
    post = next(s for s in steps if "moat-pr-comment.sh" in s.get("run", ""))
    assert set(post["env"]) == {"GITHUB_TOKEN", "PR_NUMBER"}
    assert subprocess.run(["sh", "-n", str(SCRIPT)]).returncode == 0


def _repo(tmp_path: Path) -> tuple[Path, callable]:
    repo = tmp_path / "repo"
    (repo / "blueprints").mkdir(parents=True)
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=repo,  # noqa: E731
                                    check=True, capture_output=True, text=True)
    shutil.copy(ROOT / "blueprints" / "example.yaml", repo / "blueprints" / "example.yaml")
    shutil.copy(ROOT / "blueprints" / "vps-front.yaml", repo / "blueprints" / "vps-front.yaml")
    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-qm", "base")
    git("checkout", "-qb", "pr")
    return repo, git


def test_a_pull_request_gets_one_comment_updated_in_place(tmp_path):
    repo, git = _repo(tmp_path)
    add_vm = next(c for c in CASES if c.name == "add-vm-with-forward")
    (repo / "blueprints" / "example.yaml").write_text(edited(add_vm))
    git("commit", "-qam", "a VM for git")
    Comments.store, Comments.log = {999: "an unrelated comment"}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Comments)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "GITHUB_API_URL": f"http://127.0.0.1:{server.server_port}", "GITHUB_REPOSITORY": "me/home",
           "GITHUB_TOKEN": "t0ken", "PR_NUMBER": "7", "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}
    try:
        first = subprocess.run(["sh", str(SCRIPT), "main"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "comment posted" in first.stdout
        ours = {i: b for i, b in Comments.store.items() if i != 999}
        assert len(ours) == 1
        body = next(iter(ours.values()))
        assert body.startswith("<!-- moat-diff -->\n")
        assert "## `blueprints/example.yaml`" in body and "moat diff: security-relevant" in body
        assert "tcp/2223 opens to the Internet" in body and "vps-front.yaml" not in body
        # the next push: a second blueprint changes too; the same comment is rewritten
        site = next(c for c in CASES if c.name == "vps-site-added")
        (repo / "blueprints" / "vps-front.yaml").write_text(edited(site))
        git("commit", "-qam", "a site")
        second = subprocess.run(["sh", str(SCRIPT), "main"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"comment {next(iter(ours))} updated" in second.stdout
        assert len(Comments.store) == 2 and Comments.store[999] == "an unrelated comment"
        body = Comments.store[next(iter(ours))]
        assert "## `blueprints/vps-front.yaml`" in body and "https://notes.example.org is published" in body
        assert [m for m, _ in Comments.log] == ["GET", "POST", "GET", "PATCH"]
        # a bad token: the job fails, loudly
        bad = subprocess.run(["sh", str(SCRIPT), "main"], cwd=repo, env={**env, "GITHUB_TOKEN": "nope"},
                             capture_output=True, text=True, timeout=300)
        assert bad.returncode != 0 and "401" in bad.stderr
    finally:
        server.shutdown()


def test_a_broken_blueprint_fails_the_job_with_its_location(tmp_path):
    repo, git = _repo(tmp_path)
    path = repo / "blueprints" / "example.yaml"
    path.write_text(path.read_text().replace("cpus: 16", "cpus: sixteen"))
    git("commit", "-qam", "typo")
    out = tmp_path / "comment.md"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "MOAT_COMMENT_ONLY": str(out)}
    proc = subprocess.run(["sh", str(SCRIPT), "main"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "HEAD:blueprints/example.yaml:" in proc.stderr and "error[" in proc.stderr
    assert not out.exists()
