"""Build bustd's Debian package from a clean copy of a checkout (issue 17).

:func:`clean_copy` copies what a fresh clone holds (the files git tracks, and
new ones it does not ignore: no caches, venvs or earlier builds);
:func:`build` runs ``dpkg-buildpackage -us -uc -b`` there in a network
namespace of its own (no network at all: the build is offline) and returns
the one ``bustd_VERSION_all.deb`` it made; :func:`bump` adds a changelog
entry first, for a newer build to upgrade to. :func:`lintian` runs lintian on
the build's ``.changes`` (the package and the upload) and parses its tags.
Used by tests/packaging/test_deb.py and by the VM suite's systemd test, which
installs, upgrades and purges the package under a booted systemd.

As a command: ``python3 -m tests.packaging.debbuild OUTDIR [--version V]``
copies this checkout to OUTDIR/src, builds there, prints the .deb's path.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BUILD_TOOLS", "Built", "Tag", "build", "bump", "clean_copy", "lintian",
           "missing_tools", "parse_lintian"]

REPO = Path(__file__).resolve().parents[2]
# Debian's packages that provide them (.ci/run installs them: tests/install-test-packages).
BUILD_TOOLS = {"dpkg-buildpackage": "dpkg-dev", "dh": "debhelper", "dh_python3": "dh-python",
               "lintian": "lintian", "unshare": "util-linux"}
# Debian's own tools and interpreters only: not a venv's or pyenv's python3.
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


@dataclass(frozen=True)
class Built:
    """One build: the package, the .changes file, the build's log and its wall time."""

    deb: Path
    changes: Path
    log: str
    seconds: float


@dataclass(frozen=True)
class Tag:
    """One lintian tag: severity letter (E, W, I, P, X...), package, tag name, the rest."""

    severity: str
    package: str
    name: str
    detail: str


def missing_tools() -> list[str]:
    """Return "TOOL (package PKG)" for each build tool that is not installed."""
    return [f"{tool} (package {pkg})" for tool, pkg in BUILD_TOOLS.items()
            if shutil.which(tool, path=ENV["PATH"]) is None]


def clean_copy(repo: Path, dst: Path) -> Path:
    """Copy what a clean checkout of ``repo`` holds into ``dst``; return ``dst``.

    Raises RuntimeError if ``repo`` is not a git checkout.
    """
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard"], capture_output=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{repo}: not a git checkout: {out.stderr.decode(errors='replace')}")
    for name in sorted(set(out.stdout.decode().split("\0")) - {""}):
        src = repo / name
        if not os.path.lexists(src):  # deleted but not yet committed
            continue
        target = dst / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    return dst


def bump(src: Path, version: str, change: str) -> None:
    """Add a changelog entry for ``version`` (a newer build) on top of debian/changelog."""
    path = src / "debian" / "changelog"
    old = path.read_text()
    first = re.match(r"(\S+) \(([^)]+)\) (\S+); (.*)", old)
    trailer = re.search(r"^ -- (.+?)  ", old, re.M)
    if first is None or trailer is None:
        raise ValueError(f"{path}: no changelog entry to follow")
    stamp = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    entry = (f"{first.group(1)} ({version}) {first.group(3)}; {first.group(4)}\n\n"
             f"  * {change}\n\n -- {trailer.group(1)}  {stamp}\n\n")
    path.write_text(entry + old)


def build(src: Path, timeout: float = 900.0) -> Built:
    """Run ``dpkg-buildpackage -us -uc -b`` in ``src`` with no network; return the build.

    The results land in ``src``'s parent, which should hold nothing else.
    Raises RuntimeError naming what failed (with the end of the build's log).
    """
    for old in src.parent.glob("bustd_*"):
        old.unlink()
    t = time.monotonic()
    out = subprocess.run(["unshare", "--net", "dpkg-buildpackage", "-us", "-uc", "-b"],
                         cwd=src, env=ENV, capture_output=True, text=True, timeout=timeout,
                         check=False)
    seconds = time.monotonic() - t
    log = out.stdout + out.stderr
    if out.returncode != 0:
        raise RuntimeError(f"dpkg-buildpackage in {src} failed ({out.returncode}):\n"
                           f"{log[-3000:]}")
    debs = sorted(src.parent.glob("*.deb"))
    changes = sorted(src.parent.glob("*.changes"))
    if len(debs) != 1 or len(changes) != 1:
        raise RuntimeError(f"dpkg-buildpackage in {src}: expected one .deb and one .changes, "
                           f"got {[p.name for p in debs + changes]}")
    return Built(debs[0], changes[0], log, seconds)


_TAG = re.compile(r"^([A-Z]): (\S+?)(?: [a-z]+)?: (\S+)(?: (.*))?$")


def parse_lintian(text: str) -> list[Tag]:
    """Return the tags of lintian's output (lines ``E: pkg[ type]: tag detail``).

    Lines that are not tags (N: notes, messages) are left out.
    """
    tags = []
    for line in text.splitlines():
        m = _TAG.match(line)
        if m and m.group(1) != "N":
            tags.append(Tag(m.group(1), m.group(2), m.group(3), m.group(4) or ""))
    return tags


def lintian(changes: Path, timeout: float = 600.0) -> tuple[list[Tag], str]:
    """Run lintian (every tag, pedantic and experimental too) on ``changes``.

    Returns (tags, output). Raises RuntimeError if lintian itself failed to run
    (exit status 2 or more; 1 only means it reported an error tag).
    """
    out = subprocess.run(["lintian", "--pedantic", "--display-info", "--display-experimental",
                          str(changes)], env=ENV, capture_output=True, text=True,
                         timeout=timeout, check=False)
    if out.returncode not in (0, 1):
        raise RuntimeError(f"lintian {changes} failed ({out.returncode}): {out.stderr[-2000:]}")
    return parse_lintian(out.stdout), out.stdout


def main(argv: list[str] | None = None) -> int:
    """The command of the module's docstring; 2 when a build tool is missing."""
    p = argparse.ArgumentParser(prog="python3 -m tests.packaging.debbuild",
                                description="Build bustd's .deb from a clean copy.")
    p.add_argument("outdir", type=Path)
    p.add_argument("--version", help="add a changelog entry for this (newer) version first")
    args = p.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"debbuild: missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    src = clean_copy(REPO, args.outdir / "src")
    if args.version:
        bump(src, args.version, "A newer build (tests/packaging/debbuild.py --version).")
    print(build(src).deb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
