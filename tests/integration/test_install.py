"""`pip install .` and `pipx install .` give a working `bustd` command and bustd(8).

Each install goes into a fresh venv (pipx: a fresh PIPX_HOME) from a copy of
this tree, and the installed command is run for real: ``--version``,
``check --json`` (validated against the schema), and the daemon itself, as
a dry run inside a private PID namespace, started from site-packages,
reloaded with SIGHUP (the front end found from site-packages too) and
stopped. pipx is pinned in tests/requirements.txt, which tests/run installs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bustd import __version__, manpage
from tests.integration.confine import confined
from tests.unit.test_check import validate

REPO = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__",
                              ".mypy_cache", ".pytest_cache", ".ruff_cache", "results")


def source(tmp: Path) -> Path:
    """Return a copy of the working tree (what `pip install .` would see, without caches)."""
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=SKIP)
    return src


def sh(*argv: str | Path, env: dict[str, str] | None = None, timeout: float = 600
       ) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                         timeout=timeout, check=False, env=env)
    assert out.returncode == 0, (argv, out.stdout[-2000:], out.stderr[-2000:])
    return out


def exercise(bustd: Path, man: Path, tmp: Path) -> None:
    """Run the installed command every way a user would; check its man page."""
    assert sh(bustd, "--version").stdout == f"bustd {__version__}\n"
    assert "bustd check [OPTIONS]" in sh(bustd, "--help").stdout
    report = json.loads(sh(bustd, "check", "--json", "--interval", "0.2").stdout)
    validate(report)
    assert man.read_text() == manpage.render(), man
    # The daemon from site-packages, confined: start, SIGHUP, SIGTERM.
    log = tmp / "daemon.log"
    out = confined(["sh", "-c", r'''
"$1" --dry-run -r 0 2>"$2" & pid=$!
i=0; while ! grep -q "watching /proc" "$2" && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
tr '\0' ' ' < /proc/$pid/cmdline; echo
kill -HUP $pid
i=0; while ! grep -q "reloaded" "$2" && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
kill -TERM $pid; wait $pid; echo "rc=$?"
''', "sh", str(bustd), str(log)], timeout=60, text=True)
    text = log.read_text()
    cmdline, rc = out.stdout.splitlines()
    assert rc == "rc=0", (out.stdout, out.stderr, text)
    assert " -S -I " in cmdline and "site-packages/bustd/lean.py --dry-run -r 0" in cmdline
    assert "watching /proc" in text and "DRY RUN" in text, text
    assert "reloaded the command line (no --config): no change; SIGTERM at" in text, text
    assert "bustd exiting after 0 kills" in text and "Traceback" not in text, text


def test_pip_install_in_a_fresh_venv(tmp_path: Path) -> None:
    src = source(tmp_path)
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", venv)
    sh(venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", src)
    exercise(venv / "bin" / "bustd", venv / "share" / "man" / "man8" / "bustd.8", tmp_path)
    # Installed compiled: the runtime never compiles its modules at start.
    site = next((venv / "lib").glob("python3*/site-packages/bustd"))
    assert list((site / "__pycache__").glob("runtime.*.pyc")), list(site.iterdir())


def test_pipx_install(tmp_path: Path) -> None:
    pipx = Path(sys.executable).parent / "pipx"
    if not pipx.exists():
        pytest.fail(f"{pipx} missing: tests/run installs pipx from tests/requirements.txt")
    src = source(tmp_path)
    env = {**os.environ, "PIPX_HOME": str(tmp_path / "pipx"),
           "PIPX_BIN_DIR": str(tmp_path / "bin"), "PIPX_MAN_DIR": str(tmp_path / "man")}
    sh(pipx, "install", src, env=env)
    listed = sh(pipx, "list", "--short", env=env).stdout
    assert listed.split() == ["bustd", __version__], listed
    exercise(tmp_path / "bin" / "bustd", tmp_path / "man" / "man8" / "bustd.8", tmp_path)
