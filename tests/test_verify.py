"""The verify stage: validators come from the families, run in parallel, passes are cached by content."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from compiler.pipeline import build_file
from compiler import verify
from compiler.render import families
from compiler.verify import run_validators, validators

from .conftest import FIXTURES


def test_every_family_declares_validators_that_match_its_files():
    from compiler.pipeline import check_file
    from .conftest import ROOT

    compiled = check_file(ROOT / "blueprints" / "example.yaml")
    for family in families():
        for v in getattr(family, "VALIDATORS", ()):
            assert v.package, v
    checked = {p for p in compiled.files if any(__import__("fnmatch").fnmatchcase(p, v.pattern) for v in validators())}
    unchecked = sorted(set(compiled.files) - checked - {"blueprint.yaml"})
    # meta-data: two keys cloud-init reads verbatim; host/images.json: read by moat iso alone, which
    # refuses any entry it cannot use (compiler/media/images.py listed(), tests/test_media_images.py);
    # topology.json: json.dumps of plain data, the source topology.svg is drawn from (that one is
    # checked by xmllint and rsvg-convert; tests/test_topology.py checks what the JSON says);
    # host/moat/switch.json: json.dumps of the install table, read by the switch (tests/test_deploy.py)
    assert not unchecked or all(p.endswith(("meta-data", "host/images.json", "host/moat/switch.json"))
                                or p == "topology.json" for p in unchecked), \
        f"files no tool checks: {unchecked}"


def test_passed_validations_are_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("MOAT_CACHE_DIR", str(tmp_path / "cache"))
    _, stored = build_file(FIXTURES / "base.yaml", tmp_path / "out", tools=False)
    tree = tmp_path / "tree"
    shutil.copytree(stored.path, tree)
    for dirpath, _dirs, _files in os.walk(tree):
        os.chmod(dirpath, 0o755)
    first = run_validators(tree)
    assert first and all(f.ok and f.output != "(cached)" for f in first)
    second = run_validators(tree)
    assert [f.path for f in second] == [f.path for f in first]
    assert all(f.output == "(cached)" for f in second)
    # a changed file is judged again, and a failure is never cached
    domain = tree / "host/libvirt/domains/web.xml"
    os.chmod(domain, 0o644)
    domain.write_text(domain.read_text().replace("<vcpu", "<vcpus"))
    third = [f for f in run_validators(tree) if f.path == "host/libvirt/domains/web.xml"]
    assert third and not third[0].ok and third[0].output != "(cached)"
    again = [f for f in run_validators(tree) if f.path == "host/libvirt/domains/web.xml"]
    assert not again[0].ok and again[0].output != "(cached)"


def _validated_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("MOAT_CACHE_DIR", str(tmp_path / "cache"))
    _, stored = build_file(FIXTURES / "base.yaml", tmp_path / "out", tools=False)
    tree = tmp_path / "tree"
    shutil.copytree(stored.path, tree)
    for dirpath, _dirs, files in os.walk(tree):
        os.chmod(dirpath, 0o755)
        for name in files:
            path = os.path.join(dirpath, name)
            os.chmod(path, os.stat(path).st_mode | 0o200)
    first = run_validators(tree)
    assert all(f.ok for f in first), [f for f in first if not f.ok]
    return tree


def _logged(tool: str, tmp_path, monkeypatch, path: str | None = None) -> Path:
    """`tool` found first on PATH as a wrapper that logs each run's arguments to the file it
    returns, then runs the real program (the runs a build pays, counted for real)."""
    calls = tmp_path / "calls"
    fake = tmp_path / "bin"
    fake.mkdir()
    real = shutil.which(tool, path=path)
    (fake / tool).write_text(f'#!/bin/sh\necho "$@" >>{calls}\nexec {real} "$@"\n')
    (fake / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    return calls


def _rerun(tree) -> set[tuple[str, str]]:
    """(file, tool) of every validation that ran again rather than came from the cache."""
    return {(f.path, Path(f.validator.command[0]).name) for f in run_validators(tree) if f.output != "(cached)"}


def test_an_edit_revalidates_only_the_files_whose_inputs_changed(tmp_path, monkeypatch):
    tree = _validated_tree(tmp_path, monkeypatch)
    assert _rerun(tree) == set()
    domain = tree / "host/libvirt/domains/web.xml"
    domain.write_text(domain.read_text().replace("</domain>", "<!-- edited -->\n</domain>"))
    assert _rerun(tree) == {("host/libvirt/domains/web.xml", "libvirt-xml.sh")}
    # firewalld.conf is checked together with the zones: a zone edit judges both again
    zone = sorted((tree / "host/firewalld/zones").glob("*.xml"))[0]
    zone.write_text(zone.read_text().replace("</zone>", "<!-- edited -->\n</zone>"))
    rel = zone.relative_to(tree).as_posix()
    assert _rerun(tree) == {(rel, "firewall-firewalld.sh"), ("host/firewalld/firewalld.conf", "firewall-firewalld.sh"),
                            ("host/firewalld/policies/moat-egress.xml", "firewall-firewalld.sh")}
    # a unit is checked with the script it starts (named in the command as INSTALLED=PATH)
    from compiler.render.libvirt import APPLY, APPLY_UNIT
    script = tree / APPLY
    script.write_text(script.read_text() + "# edited\n")
    assert _rerun(tree) == {(APPLY, "shellcheck"), (APPLY_UNIT, "systemd-unit.sh")}


def test_the_host_kickstart_is_not_judged_again_for_a_new_sum_of_a_file_it_installs(tmp_path, monkeypatch):
    tree = _validated_tree(tmp_path, monkeypatch)
    ks = tree / "host/kickstart/ks.cfg"
    text = ks.read_text()
    line = next(line for line in text.splitlines() if line.startswith("install_file host/libvirt/domains/web.xml "))
    source, dest, mode, digest = line.split()[1:]
    assert re.fullmatch("[0-9a-f]{64}", digest), line
    ks.write_text(text.replace(line, line.replace(digest, "f" * 64)))  # web.xml edited: its sum, nothing else
    assert _rerun(tree) == set()
    for changed in (line.replace(f" {mode} ", " 0600 "), line.replace(digest, "f" * 63),
                    line.replace(digest, digest + " extra"), line.replace(source, source + ";true")):
        ks.write_text(text.replace(line, changed))
        assert ("host/kickstart/ks.cfg", "kickstart.sh") in _rerun(tree), changed
    # a kickstart that fails is judged again, whatever its sums
    ks.write_text(text.replace(line, line.replace(digest, "0" * 64)).replace("%end", "%nd", 1))
    first = [f for f in run_validators(tree) if f.path == "host/kickstart/ks.cfg"]
    ks.write_text(text.replace(line, line.replace(digest, "1" * 64)).replace("%end", "%nd", 1))
    again = [f for f in run_validators(tree) if f.path == "host/kickstart/ks.cfg"]
    assert first and again and not any(f.ok for f in first + again), first + again


def test_identical_content_is_judged_once_and_reported_for_each_file(tmp_path, monkeypatch):
    tree = _validated_tree(tmp_path, monkeypatch)
    calls = _logged("shellcheck", tmp_path, monkeypatch)
    # one script under the same name in two VMs' folders: one shellcheck run, two findings
    files = [tree / "vms/web/cloud-init/moat-firstboot", tree / "vms/twin/cloud-init/moat-firstboot"]
    files[1].parent.mkdir(parents=True)
    body = "#!/bin/sh\necho provisioned\n"
    for file in files:
        file.write_text(body)
    prefix = ("vms/web/cloud-init/moat-firstboot", "vms/twin/cloud-init/moat-firstboot")
    findings = [f for f in run_validators(tree) if f.path.startswith(prefix)]
    assert sorted(f.path for f in findings) == ["vms/twin/cloud-init/moat-firstboot", "vms/web/cloud-init/moat-firstboot"]
    assert all(f.ok for f in findings)
    ran = calls.read_text().splitlines()
    assert len([line for line in ran if "/cloud-init/moat-firstboot" in line]) == 1, ran
    bad = "#!/bin/sh\nrm -rf $dir/*\n"
    for file in files:
        file.write_text(bad)
    failed = sorted((f for f in run_validators(tree) if f.path.startswith(prefix)), key=lambda f: f.path)
    assert [f.ok for f in failed] == [False, False]
    assert "vms/twin/" in failed[0].output and "vms/web/" not in failed[0].output, failed[0].output
    assert "vms/web/" in failed[1].output and "vms/twin/" not in failed[1].output, failed[1].output


def test_scripts_that_differ_only_in_their_header_comments_are_checked_once(tmp_path, monkeypatch):
    tree = _validated_tree(tmp_path, monkeypatch)
    calls = _logged("shellcheck", tmp_path, monkeypatch)
    names = ("web", "twin", "third")
    files = {name: tree / f"vms/{name}/cloud-init/moat-firstboot" for name in names}
    for file in files.values():
        file.parent.mkdir(parents=True, exist_ok=True)

    def judge(bodies: dict[str, str]) -> tuple[dict[str, object], int]:
        calls.write_text("")
        for name, body in bodies.items():
            files[name].write_text(body)
        found = {f.path.split("/")[1]: f for f in run_validators(tree) if f.path.endswith("/moat-firstboot")}
        return found, len([line for line in calls.read_text().splitlines() if "moat-firstboot" in line])

    # the VM named in the opening comment: one run judges all three
    found, runs = judge({n: f"#!/bin/sh\n# moat-firstboot of VM {n}\n#\necho provisioned\n" for n in names})
    assert runs == 1 and all(f.ok for f in found.values()), found
    # the same bad line in each: one run, each file rejected under its own name, at line 4
    found, runs = judge({n: f"#!/bin/sh\n# moat-firstboot of VM {n}\n#\nrm -rf $dir/*\n" for n in names})
    assert runs == 1 and not any(f.ok for f in found.values()), found
    assert all(f"vms/{n}/" in f.output and "line 4:" in f.output for n, f in found.items()), found
    # a directive is not a mere comment; nor is a comment after the first command
    found, _runs = judge({"web": "#!/bin/sh\n# shellcheck disable=SC2115,SC2154\nrm -rf $dir/*\n",
                          "twin": "#!/bin/sh\n# about twin\nrm -rf $dir/*\n",
                          "third": "#!/bin/sh\nrm -rf $dir/*\n# about third\n"})
    assert found["web"].ok and not found["twin"].ok and not found["third"].ok, found
    # nor is a comment with what shellcheck warns of even there (a carriage return)
    found, _runs = judge({"web": "#!/bin/sh\n# about web\necho ok\n", "twin": "#!/bin/sh\n# about twin\r\necho ok\n",
                          "third": "#!/bin/sh\n# about third\necho ok\n"})
    assert found["web"].ok and found["third"].ok and not found["twin"].ok, found


def test_a_batch_validator_checks_many_files_in_one_run_and_names_the_one_it_rejects(tmp_path, monkeypatch):
    tree = _validated_tree(tmp_path, monkeypatch)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # two workers, so batches of two below
    monkeypatch.setattr(verify, "BATCH_MIN", 2)
    checks = ("cloudinit.sh", "cloudinit-netplan.sh")  # the former on user-data and network-config
    copies = [tree / f"vms/web{n}/cloud-init" for n in range(4)]

    def edit(mark: str) -> None:
        for copy in copies:
            shutil.copytree(tree / "vms/web/cloud-init", copy, dirs_exist_ok=True)
            for name in ("user-data", "network-config"):
                (copy / name).write_text((copy / name).read_text() + f"# {copy.parent.name} {mark}\n")

    def judged() -> dict[tuple[str, str], object]:
        return {(f.path, Path(f.validator.command[0]).name): f for f in run_validators(tree)
                if f.path.startswith("vms/web") and not f.path.startswith("vms/web/")
                and Path(f.validator.command[0]).name in checks and f.output != "(cached)"}

    edit("first")
    first = judged()
    assert len(first) == 4 * 3 and all(f.ok for f in first.values()), first
    # two workers: the files of each command in two runs, not a run each (cloudinit.sh: the four
    # user-data and the four network-config together)
    runs = {tool: 4 if tool == "cloudinit.sh" else 2 for _path, tool in first}
    assert all(f.output.startswith(f"(passed in one run for {runs[tool]} files)") for (_p, tool), f in first.items()), first
    # one bad file among good ones: the batch fails, and each file is judged on its own
    edit("second")
    (copies[2] / "user-data").write_text("#cloud-config\nusers: 5\n")
    (copies[1] / "network-config").write_text("network:\n  version: 2\n  ethernets: [5]\n")
    second = judged()
    rejected = sorted(key for key, f in second.items() if not f.ok)
    assert rejected == [("vms/web1/cloud-init/network-config", "cloudinit-netplan.sh"),
                        ("vms/web1/cloud-init/network-config", "cloudinit.sh"),
                        ("vms/web2/cloud-init/user-data", "cloudinit.sh")], rejected
    assert "users" in second[("vms/web2/cloud-init/user-data", "cloudinit.sh")].output
    assert "web1/cloud-init/network-config" in second[("vms/web1/cloud-init/network-config",
                                                       "cloudinit-netplan.sh")].output
    assert len(second) == 4 * 3


def test_a_few_files_of_a_batch_validator_are_one_run_whatever_the_workers(tmp_path, monkeypatch):
    tree = _validated_tree(tmp_path, monkeypatch)
    monkeypatch.setenv("MOAT_VERIFY_WORKERS", "2")
    shutil.rmtree(tmp_path / "cache")
    zones = sorted((tree / "host/firewalld/zones").glob("*.xml"))
    for n in range(3):  # more zones (an interface is in one zone only), so that the firewalld files outnumber the workers
        text = "".join(line for line in zones[0].read_text().splitlines(keepends=True) if "<interface" not in line)
        zones[0].with_name(f"moat-extra{n}.xml").write_text(text)
    firewalld = [f for f in run_validators(tree) if f.path.startswith("host/firewalld/")]
    assert len(firewalld) >= 5 and all(f.ok for f in firewalld), firewalld
    assert all(f.output.startswith(f"(passed in one run for {len(firewalld)} files)") for f in firewalld), firewalld


def test_batch_validators_with_one_command_share_their_runs(tmp_path, monkeypatch):
    tree = _validated_tree(tmp_path, monkeypatch)
    monkeypatch.setenv("MOAT_VERIFY_WORKERS", "1")  # one worker: one batch per command
    shutil.rmtree(tmp_path / "cache")
    sshd = {f.path: f for f in run_validators(tree) if f.path.endswith("/ssh/sshd_config")}
    # the host's and the VM's sshd_config: two validators (patterns), one command, one run
    assert sorted(sshd) == ["host/ssh/sshd_config", "vms/web/ssh/sshd_config"], sorted(sshd)
    assert len({f.validator.pattern for f in sshd.values()}) == 2
    assert all(f.ok and f.output.startswith("(passed in one run for 2 files)") for f in sshd.values()), sshd


def test_the_validators_that_took_longest_last_time_start_first(tmp_path, monkeypatch, capfd):
    tree = _validated_tree(tmp_path, monkeypatch)
    times = tmp_path / "cache" / "verify-times.json"
    took = json.loads(times.read_text())  # what each validator took per file, written by the build
    assert took and all(isinstance(s, float) for s in took.values()), took
    monkeypatch.setenv("MOAT_VERIFY_WORKERS", "1")
    monkeypatch.setenv("MOAT_VERIFY_TIMES", "1")
    for slowest in ("xmllint --noout {file}", f"{verify.VERIFY_TOOLS}/switch.sh {{file}}"):
        times.write_text(json.dumps({**{command: 0.01 for command in took}, slowest: 9.0}))
        shutil.rmtree(tmp_path / "cache" / "verified", ignore_errors=True)
        capfd.readouterr()
        run_validators(tree)
        ran = [line.split()[3] for line in capfd.readouterr().err.splitlines() if line.startswith("moat-verify-time")]
        assert ran and ran[0] == Path(slowest.split()[0]).name, ran


def test_sshd_configs_that_differ_only_in_comments_are_checked_once(tmp_path, monkeypatch):
    tree = _validated_tree(tmp_path, monkeypatch)
    calls = _logged("sshd", tmp_path, monkeypatch, path="/usr/sbin:/usr/bin:/sbin:/bin")
    base = (tree / "vms/web/ssh/sshd_config").read_text()
    names = ("web", "twin", "third")
    files = {name: tree / f"vms/{name}/ssh/sshd_config" for name in names}

    def judge(bodies: dict[str, str]) -> tuple[dict[str, object], int]:
        calls.write_text("")
        for name, body in bodies.items():
            files[name].parent.mkdir(parents=True, exist_ok=True)
            files[name].write_text(body)
        found = {f.path.split("/")[1]: f for f in run_validators(tree) if f.path.startswith("vms/")
                 and f.path.endswith("/ssh/sshd_config")}
        return found, len([line for line in calls.read_text().splitlines() if "/vms/" in line])

    found, runs = judge({n: f"# sshd_config of VM {n}\n{base}  # indented, about {n}\n" for n in names})
    assert runs == 1 and all(f.ok for f in found.values()), found
    # a directive sshd refuses, under comments that differ: still one run, each file named
    found, runs = judge({n: f"# VM {n}\n{base}NoSuchOption yes\n" for n in names})
    assert runs == 1 and not any(f.ok for f in found.values()), found
    assert all(f"vms/{n}/ssh/sshd_config" in f.output for n, f in found.items()), found
    # an option in one of them is no comment: judged on its own
    found, runs = judge({"web": "#\n" + base, "twin": "#\n" + base + "PermitRootLogin no\n", "third": "# third\n" + base})
    assert runs == 2 and all(f.ok for f in found.values()), found
