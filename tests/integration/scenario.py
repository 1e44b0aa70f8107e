"""Running harness.py scenarios from tests: one place for the call and its parsing."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from tests.integration.confine import confined

__all__ = ["kill_lines", "run"]

HERE = os.path.dirname(os.path.abspath(__file__))


def run(spec: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Run harness.py with ``spec`` as PID 1 of a new PID namespace; return its JSON."""
    out = confined([sys.executable, os.path.join(HERE, "harness.py"), json.dumps(spec)],
                   timeout)
    if out.returncode != 0:
        raise AssertionError(f"harness failed ({out.returncode}): {out.stderr.decode()}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def kill_lines(log: str) -> list[str]:
    """Return the log's kill lines (real kills only, not dry runs)."""
    return [line for line in log.splitlines() if "kill: pid=" in line]
