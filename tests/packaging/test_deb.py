"""The Debian package (issue 17): built from a clean copy, its contents and lintian.

One build per session (a few seconds), offline (debbuild.build runs it in a
network namespace of its own). Checked: one architecture-independent
``bustd_VERSION_all.deb`` whose only dependency is python3 (>= 3.9); the
files it holds are this checkout's (the package, the command on Debian's
python3, bustd(8), /etc/bustd.conf as the only conffile, the unit with only
its command changed); the maintainer scripts compile the .pyc at install,
enable and start the unit, restart it on upgrade, stop it on removal; the
packaged command runs (``--version``, ``check --json``); lintian reports no
error, and each other tag it reports is explained in README.md. Installing
it under a booted systemd is the VM suite's systemd test.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from bustd import __version__
from tests.packaging import debbuild
from tests.unit.test_check import validate

REPO = debbuild.REPO
# Debian's interpreter: the one the package depends on (not this venv's).
PYTHON3 = "/usr/bin/python3"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> debbuild.Built:
    missing = debbuild.missing_tools()
    if missing or os.geteuid() != 0:
        pytest.fail(f"the package tests need root and {', '.join(missing) or 'nothing else'}: "
                    "tests/run installs them (tests/install-test-packages)")
    tmp = tmp_path_factory.mktemp("deb")
    return debbuild.build(debbuild.clean_copy(REPO, tmp / "src"))


def dpkg_deb(*args: str | Path) -> str:
    out = subprocess.run(["dpkg-deb", *map(str, args)], capture_output=True, text=True,
                         check=False, env=debbuild.ENV)
    assert out.returncode == 0, (args, out.stderr)
    return out.stdout


def field(deb: Path, name: str) -> str:
    return dpkg_deb("-f", deb, name).strip()


def members(deb: Path) -> dict[str, tarfile.TarInfo]:
    listing = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                             check=True)
    path = deb.parent / "data.tar"
    path.write_bytes(listing.stdout)
    with tarfile.open(path) as tar:
        return {m.name.removeprefix("."): m for m in tar.getmembers()}


def test_one_architecture_independent_package(built: debbuild.Built) -> None:
    version = subprocess.run(["dpkg-parsechangelog", "-S", "Version"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.strip()
    assert built.deb.name == f"bustd_{version}_all.deb"
    assert version.split("-")[0].split("+")[0] == __version__, (version, __version__)
    assert field(built.deb, "Architecture") == "all"
    assert field(built.deb, "Package") == "bustd"
    assert "dpkg-buildpackage: info: binary-only upload" in built.log


def test_the_only_dependency_is_python3(built: debbuild.Built) -> None:
    # dh-python's spelling of python3 (>= 3.9): ":any" lets an architecture-
    # independent package use the python3 of any architecture, "~" admits
    # its pre-releases.
    assert field(built.deb, "Depends") == "python3:any (>= 3.9~)"
    for other in ("Pre-Depends", "Recommends", "Suggests", "Conflicts", "Breaks"):
        assert field(built.deb, other) == "", other


def test_files_are_the_checkouts(built: debbuild.Built, tmp_path: Path) -> None:
    files = members(built.deb)
    root = tmp_path / "root"
    dpkg_deb("-x", built.deb, root)
    site = "/usr/lib/python3/dist-packages/bustd"
    shipped = {p.name for p in (REPO / "bustd").glob("*.py")}
    assert {n.rsplit("/", 1)[1] for n in files if n.startswith(f"{site}/")} == shipped
    for name in shipped:
        assert (root / site.lstrip("/") / name).read_bytes() == (
            REPO / "bustd" / name).read_bytes(), name
    # Compiled at install (py3compile in postinst), never shipped.
    assert not [n for n in files if n.endswith(".pyc") or "__pycache__" in n]
    assert (root / "etc/bustd.conf").read_bytes() == (REPO / "contrib/bustd.conf").read_bytes()
    assert files["/etc/bustd.conf"].mode & 0o777 == 0o644
    page = gzip.decompress((root / "usr/share/man/man8/bustd.8.gz").read_bytes())
    assert page == (REPO / "man/bustd.8").read_bytes()
    command = (root / "usr/bin/bustd").read_text()
    assert command.startswith("#!/usr/bin/python3\n"), command
    assert "from bustd.cli import main" in command, command
    assert files["/usr/bin/bustd"].mode & 0o777 == 0o755
    # For fleets: the Prometheus rules and the Kubernetes manifest.
    for name, source_path in (("bustd.rules.yml", "contrib/prometheus/bustd.rules.yml"),
                              ("bustd.yaml", "contrib/kubernetes/bustd.yaml")):
        shipped_file = root / "usr/share/doc/bustd/examples" / name
        assert shipped_file.read_bytes() == (REPO / source_path).read_bytes(), name
    # The unit: contrib's, with the package's command and header; nothing else.
    unit = (root / "lib/systemd/system/bustd.service").read_text().splitlines()
    source = (REPO / "contrib/bustd.service").read_text().splitlines()
    assert "ExecStart=/usr/bin/bustd --config /etc/bustd.conf" in unit
    assert [ln for ln in unit if not ln.startswith("#")] == [
        ln.replace("/usr/local/bin/bustd", "/usr/bin/bustd") for ln in source
        if not ln.startswith("#")]
    assert not [ln for ln in unit if "/usr/local" in ln or "pip install" in ln], unit
    assert sorted(n for n, m in files.items() if m.isfile()) == sorted(
        [*(f"{site}/{n}" for n in shipped), "/etc/bustd.conf", "/usr/bin/bustd",
         "/lib/systemd/system/bustd.service", "/usr/share/man/man8/bustd.8.gz",
         "/usr/share/doc/bustd/changelog.gz", "/usr/share/doc/bustd/copyright",
         "/usr/share/doc/bustd/examples/bustd.rules.yml",
         "/usr/share/doc/bustd/examples/bustd.yaml",
         *(n for n in files if n.startswith("/usr/lib/python3/dist-packages/bustd-")
           and n.endswith((".dist-info/METADATA", ".dist-info/RECORD", ".dist-info/WHEEL",
                           ".dist-info/entry_points.txt", ".dist-info/top_level.txt")))])


def test_maintainer_scripts(built: debbuild.Built, tmp_path: Path) -> None:
    ctl = tmp_path / "control"
    dpkg_deb("-e", built.deb, ctl)
    assert (ctl / "conffiles").read_text().split() == ["/etc/bustd.conf"]
    postinst = (ctl / "postinst").read_text()
    prerm = (ctl / "prerm").read_text()
    postrm = (ctl / "postrm").read_text()
    assert "py3compile -p bustd" in postinst and "py3clean -p bustd" in prerm
    assert "deb-systemd-helper enable 'bustd.service'" in postinst
    # Started on installation, restarted when an upgrade configures it ("$2" is
    # the version it replaces).
    assert re.search(r'if \[ -n "\$2" \]; then\s+_dh_action=restart\s+else\s+'
                     r"_dh_action=start", postinst), postinst
    assert "deb-systemd-invoke stop 'bustd.service'" in prerm
    assert "deb-systemd-helper purge 'bustd.service'" in postrm


def test_packaged_command_runs(built: debbuild.Built, tmp_path: Path) -> None:
    root = tmp_path / "root"
    dpkg_deb("-x", built.deb, root)
    env = {**debbuild.ENV, "PYTHONPATH": str(root / "usr/lib/python3/dist-packages")}
    command = str(root / "usr/bin/bustd")

    def run(*args: str) -> str:
        out = subprocess.run([PYTHON3, command, *args], capture_output=True, text=True,
                             env=env, timeout=60, check=False)
        assert out.returncode == 0, (args, out.stderr)
        return out.stdout

    assert run("--version") == f"bustd {__version__}\n"
    validate(json.loads(run("check", "--json", "--interval", "0.2", "-c",
                            str(root / "etc/bustd.conf"))))


README_TAGS = re.compile(r"^\| `([a-z0-9.+-]+)` \| ([EWIPX]) \|", re.M)


def test_lintian_no_error_and_every_other_tag_explained(built: debbuild.Built) -> None:
    tags, output = debbuild.lintian(built.changes)
    errors = [t for t in tags if t.severity == "E"]
    assert not errors, output
    explained = dict(README_TAGS.findall((REPO / "README.md").read_text()))
    unexplained = [t for t in tags if explained.get(t.name) != t.severity]
    assert not unexplained, (f"lintian tags not explained in README.md's table "
                             f"(| `tag` | severity | why |): {unexplained}")


def test_parse_lintian() -> None:
    text = ("E: bustd changes: bogus-mail-host Maintainer bustd@localhost\n"
            "N: \nN:   The changelog file ...\n"
            "W: bustd: some-warning [usr/bin/bustd]\n"
            "I: bustd: package-supports-alternative-init-but-no-init.d-script "
            "[lib/systemd/system/bustd.service]\n"
            "running with root privileges is not recommended!\n")
    assert debbuild.parse_lintian(text) == [
        debbuild.Tag("E", "bustd", "bogus-mail-host", "Maintainer bustd@localhost"),
        debbuild.Tag("W", "bustd", "some-warning", "[usr/bin/bustd]"),
        debbuild.Tag("I", "bustd", "package-supports-alternative-init-but-no-init.d-script",
                     "[lib/systemd/system/bustd.service]")]
