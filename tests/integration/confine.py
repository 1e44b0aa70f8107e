"""Run a command as PID 1 of a private PID namespace.

Every integration test that starts bustd, or signals anything, goes through
:func:`confined`: in a new PID namespace (with its own /proc) a process can
see and signal only what was started there, and the kernel kills the rest
when PID 1 exits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any, Sequence

import pytest

__all__ = ["UNSHARE", "confined"]

UNSHARE = ("unshare", "--pid", "--fork", "--mount-proc")


def confined(argv: Sequence[str], timeout: float, text: bool = False,
             cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[Any]:
    """Run ``argv`` as PID 1 of a new PID namespace and return its outcome.

    Fails the test (never skips) without root or unshare(1).
    """
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("integration tests need root and unshare(1): run tests/run as root")
    return subprocess.run([*UNSHARE, *argv], capture_output=True, timeout=timeout, text=text,
                          cwd=cwd, check=False)
