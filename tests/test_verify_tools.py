"""Every validator as a user meets it: with its tool absent, and given relative paths.

Parametrized over `compiler.verify.validators()` and the wrapper scripts in
compiler/verify_tools, so a new validator is covered without a new test. A tool is made absent
for real: in a private mount namespace every file its package installed is hidden under an
empty, non-executable file (the directories where tests/system/install.sh unpacks a package
under an empty tmpfs), so the wrapper's own check must notice, whatever path it uses.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.pipeline import check_file
from compiler.verify import MISSING_MARK, TOOL_MISSING, VERIFY_TOOLS, Validator, run_command, validators

from .conftest import ROOT, run_moat

BLUEPRINTS = ("example", "vps-front")  # between them, a file for every validator
BROKEN = "\n}{ moat-broken ]]] <\n"  # a line no tool accepts (no '=': fail2ban ignores unknown keys)
UNPACKED = Path("/opt/moat-tools")  # tests/system/install.sh unpacks some packages here, not installed
VALIDATORS = validators()
# wrappers that are no bundle validator, with a good and a broken input of their own
OTHER_WRAPPERS = {"luks-crypttab.sh": ("moat-data /dev/vdb none luks,discard\n",
                                       "moat-data /dev/vdb none luks,moat-broken-option\n")}


def validator_id(v: Validator) -> str:
    return f"{v.pattern}[{Path(v.command[0]).name}]"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """The example blueprints' bundles written out (tools=False): blueprint stem -> bundle directory."""
    base = tmp_path_factory.mktemp("bundles")
    roots = {}
    for stem in BLUEPRINTS:
        root = base / stem / "bundle"
        for rel, out in check_file(ROOT / "blueprints" / f"{stem}.yaml").files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(out.content if isinstance(out.content, bytes) else out.content.encode())
            path.chmod(out.mode)
        roots[stem] = root
    return roots


def sample(v: Validator, bundles: dict[str, Path], into: Path) -> tuple[Path, str]:
    """A copy of a bundle holding a file `v` checks, in `into`: (bundle directory, relative path)."""
    import fnmatch

    for root in bundles.values():
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        rel = next((f for f in files if fnmatch.fnmatchcase(f, v.pattern)), None)
        if rel is not None:
            copy = into / "bundle"
            shutil.copytree(root, copy, symlinks=True)
            return copy, rel
    raise AssertionError(f"no example blueprint makes a file for {validator_id(v)}: add one that does")


def command(v: Validator, file: str) -> list[str]:
    return [part.replace("{file}", file) for part in v.command]


# -- hiding a package -------------------------------------------------------------------------

HIDE = r"""
set -e
empty=$1 list=$2
shift 2
while IFS= read -r path; do
    case $path in
        dir:*) mount -t tmpfs moat-hidden "${path#dir:}" ;;
        *) mount --bind "$empty" "$path" ;;
    esac
done <"$list"
exec "$@"
"""


def package_paths(packages: str) -> list[str]:
    """What hides `packages`: their regular files, and "dir:" + each directory one is unpacked in."""
    paths: list[str] = []
    for name in packages.split():
        if name.startswith("pypi:"):
            dist = importlib.metadata.distribution(name[5:])
            listed = [str(dist.locate_file(f)) for f in dist.files or ()]
        else:
            proc = subprocess.run(["dpkg", "-L", name], capture_output=True, text=True)
            listed = proc.stdout.splitlines() if proc.returncode == 0 else []
            if (UNPACKED / name).is_dir():
                paths.append(f"dir:{UNPACKED / name}")
        paths += [p for p in listed if os.path.isfile(p) and not os.path.islink(p)]
    assert paths, f"{packages} is not installed here: run `make system-deps` as root"
    return paths


def without(packages: str, tmp_path: Path, argv: list[str], **kw) -> subprocess.CompletedProcess:
    """Run argv in a private mount namespace in which `packages` are not installed."""
    empty = tmp_path / "hidden"
    empty.write_text("")
    empty.chmod(0o644)
    listing = tmp_path / "hidden.list"
    listing.write_text("\n".join(package_paths(packages)) + "\n")
    userns = ["--map-root-user"] if os.geteuid() else []
    return subprocess.run(["unshare", *userns, "--mount", "--propagation", "private",
                           "sh", "-c", HIDE, "sh", str(empty), str(listing), *argv],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, **kw)


RUN_ONE = """import json, sys
from compiler.verify import run_command, validators
v = validators()[int(sys.argv[1])]
print(json.dumps(run_command([part.replace("{file}", sys.argv[2]) for part in v.command], v)))
"""


@pytest.mark.parametrize("index", range(len(VALIDATORS)), ids=[validator_id(v) for v in VALIDATORS])
def test_a_validator_whose_package_is_absent_says_which_to_install(index, bundles, tmp_path):
    v = VALIDATORS[index]
    root, rel = sample(v, bundles, tmp_path)
    proc = without(v.package, tmp_path, [sys.executable, "-c", RUN_ONE, str(index), str(root / rel)])
    assert proc.returncode == 0, proc.stderr
    ok, output, missing = json.loads(proc.stdout)
    assert not ok and set(v.package.split()) <= set(missing.split()), output
    if v.is_wrapper:  # the wrapper noticed, rather than the shell failing on a program it lacks
        assert MISSING_MARK.search(output), output


RUN_EACH = """import json, sys
from concurrent.futures import ThreadPoolExecutor
from compiler.verify import run_command, validators

def run(job):
    index, file = job.split(":", 1)
    v = validators()[int(index)]
    ok, output, missing = run_command([part.replace("{file}", file) for part in v.command], v)
    return None if ok or missing else [file, output]

with ThreadPoolExecutor(2) as pool:
    print(json.dumps([r for r in pool.map(run, sys.argv[1:]) if r]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("packages", sorted({v.package for v in VALIDATORS}))
def test_no_validator_rejects_a_good_file_when_a_package_is_absent(packages, bundles, tmp_path):
    """Tools depend on each other's packages (firewall-offline-cmd on python3-gi, say): with any
    one absent, every validator still passes a good file or says what is missing."""
    jobs = []
    for index, v in enumerate(VALIDATORS):
        root, rel = sample(v, bundles, tmp_path / str(index))
        jobs.append(f"{index}:{root / rel}")
    proc = without(packages, tmp_path, [sys.executable, "-c", RUN_EACH, *jobs])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_missing_tools_asks_the_wrappers(tmp_path):
    """`moat verify --tools` lists what the wrappers themselves miss, also a dependency of a tool."""
    probe = "import json; from compiler.verify import missing_tools; print(json.dumps(missing_tools()))"
    proc = without("openssl", tmp_path, [sys.executable, "-c", probe])
    assert proc.returncode == 0, proc.stderr
    missing = json.loads(proc.stdout)
    assert list(missing) == ["openssl"] and "openssl" in missing["openssl"], missing


# -- a PATH holding only the shell -------------------------------------------------------------

def shell_only_path(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "shell-only"
    bin_dir.mkdir()
    (bin_dir / "sh").symlink_to(shutil.which("sh"))
    return {**os.environ, "PATH": str(bin_dir)}


@pytest.mark.parametrize("index", range(len(VALIDATORS)), ids=[validator_id(v) for v in VALIDATORS])
def test_a_validator_with_only_the_shell_on_path_never_rejects(index, bundles, tmp_path):
    """Any program a wrapper runs without `need`ing it first would fail here as a rejection."""
    v = VALIDATORS[index]
    root, rel = sample(v, bundles, tmp_path)
    ok, output, missing = run_command(command(v, str(root / rel)), v, env=shell_only_path(tmp_path))
    assert ok or missing, output
    if missing and v.is_wrapper:
        assert MISSING_MARK.search(output), output


NEED = re.compile(r"^[^#\n]*\bneed (\S+) ([^\n]+)$", re.M)


def needed_programs(script: Path) -> set[str]:
    """The programs a wrapper (and what it sources) `need`s by name, parsed from its need lines."""
    texts = [script.read_text()] + [(VERIFY_TOOLS / name).read_text() for name in ("lib.sh", "cloudinit-lib.sh")
                                     if f'"${{0%/*}}/{name}"' in script.read_text()]
    return {word for text in texts for _pkg, words in NEED.findall(text) for word in words.split()
            if "/" not in word and "$" not in word and '"' not in word}


@pytest.mark.parametrize("index", range(len(VALIDATORS)), ids=[validator_id(v) for v in VALIDATORS])
def test_a_validator_needs_no_program_it_does_not_declare(index, bundles, tmp_path):
    """With a PATH holding exactly what the wrapper `need`s, it still passes a good file: its need
    lines are complete, so no missing program can ever look like a rejection."""
    v = VALIDATORS[index]
    root, rel = sample(v, bundles, tmp_path)
    programs = needed_programs(Path(v.command[0])) if v.is_wrapper else {v.command[0]}
    bin_dir = tmp_path / "needed"
    bin_dir.mkdir()
    for program in programs | {"sh"}:
        found = shutil.which(program, path=os.environ["PATH"] + ":/usr/local/sbin:/usr/sbin:/sbin")
        assert found, program
        (bin_dir / program).symlink_to(found)
    ok, output, missing = run_command(command(v, str(root / rel)), v, env={**os.environ, "PATH": str(bin_dir)})
    assert ok, output


@pytest.mark.parametrize("name", sorted(OTHER_WRAPPERS))
def test_other_wrappers_with_only_the_shell_on_path(name, tmp_path):
    good = tmp_path / "input"
    good.write_text(OTHER_WRAPPERS[name][0])
    proc = subprocess.run([str(VERIFY_TOOLS / name), str(good)], capture_output=True, text=True,
                          env=shell_only_path(tmp_path), timeout=60)
    assert proc.returncode == TOOL_MISSING and MISSING_MARK.search(proc.stderr), proc.stderr


# wrappers a validator's wrapper runs for one file (so the validator's tests cover them)
BEHIND = {"cloudinit-schema.sh": "cloudinit.sh", "cloudinit-netconvert.sh": "cloudinit.sh"}


def test_every_wrapper_script_is_covered():
    used = {Path(v.command[0]).name for v in VALIDATORS if v.is_wrapper}
    scripts = {p.name for p in VERIFY_TOOLS.glob("*.sh") if os.access(p, os.X_OK)}
    assert scripts == used | set(OTHER_WRAPPERS) | set(BEHIND), \
        "give a new wrapper a Validator or an entry in OTHER_WRAPPERS"
    for script, front in BEHIND.items():
        assert front in used and f'"${{0%/*}}/{script}"' in (VERIFY_TOOLS / front).read_text(), script
    sourced = {p.name for p in VERIFY_TOOLS.glob("*.sh")} - scripts
    assert sourced == {"lib.sh", "cloudinit-lib.sh"}
    for name in scripts:  # each speaks the missing-tool protocol
        assert '. "${0%/*}/lib.sh"' in (VERIFY_TOOLS / name).read_text(), name


# -- relative and absolute paths ---------------------------------------------------------------

@pytest.mark.parametrize("broken", [False, True], ids=["good", "broken"])
@pytest.mark.parametrize("index", range(len(VALIDATORS)), ids=[validator_id(v) for v in VALIDATORS])
def test_a_validator_gives_one_verdict_for_relative_and_absolute_paths(index, broken, bundles, tmp_path):
    v = VALIDATORS[index]
    root, rel = sample(v, bundles, tmp_path)
    if broken:
        (root / rel).chmod(0o755 if os.access(root / rel, os.X_OK) else 0o644)
        with open(root / rel, "a") as f:
            f.write(BROKEN)
    absolute = run_command(command(v, str(root / rel)), v)
    relative = run_command(command(v, f"{root.name}/{rel}"), v, cwd=root.parent)
    assert absolute[0] is not broken and not absolute[2], absolute[1]
    assert (relative[0], relative[2]) == (absolute[0], absolute[2]), relative[1]
    assert "No such file" not in relative[1], relative[1]


@pytest.mark.parametrize("name", sorted(OTHER_WRAPPERS))
def test_other_wrappers_give_one_verdict_for_relative_and_absolute_paths(name, tmp_path):
    for text, status in zip(OTHER_WRAPPERS[name], (0, 1)):
        (tmp_path / "input").write_text(text)
        absolute = subprocess.run([str(VERIFY_TOOLS / name), str(tmp_path / "input")], capture_output=True,
                                  text=True, timeout=60)
        relative = subprocess.run([str(VERIFY_TOOLS / name), "input"], capture_output=True, text=True,
                                  timeout=60, cwd=tmp_path)
        assert absolute.returncode == status, absolute.stdout + absolute.stderr
        assert relative.returncode == status, relative.stdout + relative.stderr


# -- moat build, as a user runs it -------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("blueprint, packages", [("example", "gir1.2-nm-1.0 python3-gi"), ("vps-front", "openssl")])
def test_build_without_a_tool_warns_and_succeeds(blueprint, packages, tmp_path):
    """The issue's case (libnm's bindings absent), and a dependency that is not the main tool."""
    # a remembered pass would hide it; the machine's tools, since a tools tree has every package
    env = {**os.environ, "MOAT_CACHE_DIR": str(tmp_path / "cache"), "MOAT_TOOLS": "host"}
    proc = without(packages, tmp_path, [sys.executable, "-m", "compiler.cli", "build",
                                        str(ROOT / "blueprints" / f"{blueprint}.yaml"), "--out", str(tmp_path / "out")],
                   env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"warning[tool-missing]: {packages} missing or unusable" in proc.stderr, proc.stderr
    assert "tool-rejected" not in proc.stderr
    assert (tmp_path / "out" / "current").is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("blueprint", BLUEPRINTS)
def test_build_into_the_default_relative_out(blueprint, tmp_path):
    """`moat build blueprints/X.yaml` as the README says: relative paths, every validator, no cache."""
    shutil.copytree(ROOT / "blueprints", tmp_path / "blueprints")
    proc = run_moat("build", f"blueprints/{blueprint}.yaml", cwd=tmp_path,
                    env={"MOAT_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert "tool-rejected" not in proc.stderr and "tool-missing" not in proc.stderr, proc.stderr
    assert (tmp_path / "out" / "current").is_dir()


# -- batches -----------------------------------------------------------------------------------

BATCHED = [v for v in VALIDATORS if v.batch]


@pytest.mark.parametrize("index", range(len(BATCHED)), ids=[validator_id(v) for v in BATCHED])
def test_a_batch_validator_passes_a_batch_only_when_it_passes_every_file(index, bundles, tmp_path):
    from compiler.verify import expand

    v = BATCHED[index]
    root, rel = sample(v, bundles, tmp_path)
    good = root / rel
    files = [good]
    for n in range(2):  # two more copies beside it, under names of their own with its suffix
        copy = good.with_name(f"{good.stem}-{n}{good.suffix}")  # (firewalld: a zone is *.xml)
        shutil.copy(good, copy)
        files.append(copy)
    passed = run_command(expand(v.command, [str(f) for f in files]), v)
    assert passed[0] and not passed[2], passed[1]
    # the broken one in the middle and last: the run fails, whatever its place
    for broken in files[1:]:
        broken.chmod(0o644)
        broken.write_text(good.read_text() + BROKEN)
        failed = run_command(expand(v.command, [str(f) for f in files]), v)
        assert not failed[0] and not failed[2], failed[1]
        shutil.copy(good, broken)


# -- Python starts -----------------------------------------------------------------------------

def python_starts(argv: list[str], tmp_path: Path, program: str = r"python3[.0-9]*") -> tuple[int, subprocess.CompletedProcess]:
    """How many Python interpreters (or `program`s, a regex) `argv` starts (the kernel's account:
    strace), and its result."""
    log = tmp_path / "execve.log"
    proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=execve", "-o", str(log), *argv],
                          capture_output=True, text=True, timeout=300)
    return len(re.findall(rf'execve\("[^"]*/{program}"', log.read_text())), proc


@pytest.mark.parametrize("kind", ["user-data", "network-config"])
def test_a_cloud_init_file_that_passes_costs_one_python_start(kind, bundles, tmp_path):
    """The single-file check asks cloud-init's own handler in one Python; the second and third
    (what is missing, the messages) only for a file it rejects."""
    v = next(v for v in VALIDATORS if v.pattern.endswith("/" + kind) and Path(v.command[0]).name == "cloudinit.sh")
    root, rel = sample(v, bundles, tmp_path)
    starts, proc = python_starts(command(v, str(root / rel)), tmp_path)
    assert proc.returncode == 0 and starts == 1, (starts, proc.stdout + proc.stderr)
    (root / rel).chmod(0o644)
    (root / rel).write_text((root / rel).read_text() + BROKEN)
    starts, proc = python_starts(command(v, str(root / rel)), tmp_path)
    assert proc.returncode == 1 and starts > 1, (starts, proc.stdout + proc.stderr)


def test_a_cloud_init_batch_of_both_kinds_is_one_python_and_names_the_file_it_rejects(bundles, tmp_path):
    v = next(v for v in VALIDATORS if v.pattern.endswith("/user-data") and Path(v.command[0]).name == "cloudinit.sh")
    root, rel = sample(v, bundles, tmp_path)
    seeds = root / Path(rel).parent
    files = []
    for n in range(2):  # two VMs' user-data and network-config
        copy = tmp_path / f"vm{n}"
        copy.mkdir()
        for name in ("user-data", "network-config"):
            (copy / name).write_text((seeds / name).read_text())
            files.append(str(copy / name))
    starts, proc = python_starts([v.command[0], *files], tmp_path)
    assert proc.returncode == 0 and starts == 1, (starts, proc.stdout + proc.stderr)
    for broken, rejected_by in (("network-config", "net-convert"), ("user-data", "schema")):
        bad = tmp_path / "vm1" / broken
        good = bad.read_text()
        bad.write_text("network:\n  version: 2\n  ethernets: [5]\n" if broken == "network-config"
                       else "#cloud-config\nusers: 5\n")
        proc = subprocess.run([v.command[0], *files], capture_output=True, text=True)
        verdicts = [line for line in proc.stderr.splitlines() if f"cloud-init {rejected_by}" in line]
        assert proc.returncode == 1 and verdicts and all(line.startswith(f"{bad}: ") for line in verdicts), proc.stderr
        bad.write_text(good)


def test_a_firewalld_batch_is_one_python_and_each_file_has_its_own_directory(bundles, tmp_path):
    """The zones, policies and firewalld.conf of a batch: firewalld started once for all, on a
    system-config directory per file, so a zone beside one file is not seen by another's policy."""
    v = next(v for v in VALIDATORS if v.pattern == "host/firewalld/zones/*.xml")
    root, _rel = sample(v, bundles, tmp_path)
    files = sorted(str(p) for p in (root / "host/firewalld").rglob("*") if p.is_file())
    assert len(files) >= 3, files
    starts, proc = python_starts([v.command[0], *files], tmp_path)
    assert proc.returncode == 0 and starts == 1, (starts, proc.stdout + proc.stderr)
    # a zone in one folder, a policy naming it in another where it is missing
    zone = tmp_path / "a/zones/moat-lab.xml"
    zone.parent.mkdir(parents=True)
    shutil.copy(sorted((root / "host/firewalld/zones").glob("*.xml"))[0], zone)
    policy = tmp_path / "b/policies/moat-lab.xml"
    policy.parent.mkdir(parents=True)
    policy.write_text('<?xml version="1.0" encoding="utf-8"?>\n<policy target="CONTINUE">'
                      '<ingress-zone name="moat-lab"/><egress-zone name="HOST"/></policy>\n')
    for batch in ([str(zone), str(policy)], [str(policy), str(zone)], [str(policy)]):
        proc = subprocess.run([v.command[0], *batch], capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0 and "moat-lab" in proc.stdout + proc.stderr, (batch, proc.stdout + proc.stderr)
    # a bad file last in a batch of good ones
    bad = tmp_path / "c/zones/bad.xml"
    bad.parent.mkdir(parents=True)
    bad.write_text(zone.read_text().replace("</zone>", '<rule family="ipv4"><source address="bad/if"/>'
                                            "<accept/></rule></zone>"))
    proc = subprocess.run([v.command[0], *files, str(bad)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "bad/if" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_a_kickstart_batch_starts_ksvalidator_once_and_fails_on_any_bad_script(bundles, tmp_path):
    v = next(v for v in VALIDATORS if v.pattern == "host/kickstart/ks.cfg")
    root, rel = sample(v, bundles, tmp_path)
    good = (root / rel).read_text()
    files = []
    for n in range(3):
        path = tmp_path / f"ks{n}/ks.cfg"
        path.parent.mkdir()
        path.write_text(good)
        files.append(str(path))
    starts, proc = python_starts(command(v, "{file}")[:-1] + files, tmp_path, "ksvalidator")
    assert proc.returncode == 0 and starts == 1, (starts, proc.stdout + proc.stderr)
    # a %post script shellcheck rejects, in the last file only
    Path(files[2]).write_text(good + "\n%post\nrm -rf $dir/*\n%end\n")
    proc = subprocess.run(command(v, "{file}")[:-1] + files, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    # and a command ksvalidator rejects, in the first only
    Path(files[2]).write_text(good)
    Path(files[0]).write_text(good + "\nmoat-no-such-command\n")
    proc = subprocess.run(command(v, "{file}")[:-1] + files, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stdout + proc.stderr


def test_a_libvirt_batch_reads_the_schema_once(bundles, tmp_path):
    """Many domains: one xmllint with the schema virt-xml-validate names, not one run per file."""
    v = next(v for v in VALIDATORS if v.pattern == "host/libvirt/domains/*.xml")
    root, rel = sample(v, bundles, tmp_path)
    good = root / rel
    files = [str(good)]
    for n in range(3):
        copy = good.with_name(f"moat-copy{n}.xml")
        shutil.copy(good, copy)
        files.append(str(copy))
    starts, proc = python_starts([*command(v, "{file}")[:-1], *files], tmp_path, "xmllint")
    assert proc.returncode == 0 and starts == 1, (starts, proc.stdout + proc.stderr)
    Path(files[2]).chmod(0o644)
    Path(files[2]).write_text(good.read_text().replace("<vcpu", "<vcpus").replace("</vcpu>", "</vcpus>"))
    proc = subprocess.run([*command(v, "{file}")[:-1], *files], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "moat-copy1.xml" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
