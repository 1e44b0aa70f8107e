"""The VM scenarios as pytest tests: each boots a throwaway QEMU guest.

Which scenarios run is set by $BUSTD_E2E, which tests/run sets: "1" runs
scenarios 1 and 3 (CI, every change), "all" runs all five, "0" none. Run
directly without it, they are skipped and say so.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHOICE = os.environ.get("BUSTD_E2E", "")
SELECTED = {"1": {1, 3}, "all": {1, 2, 3, 4, 5}}.get(CHOICE, set())


@pytest.mark.parametrize("scenario", [1, 2, 3, 4, 5])
def test_bustd_in_vm(scenario: int, tmp_path: Path) -> None:
    if scenario not in SELECTED:
        pytest.skip(f"VM scenario {scenario} not selected (BUSTD_E2E={CHOICE or 'unset'}; "
                    "tests/run runs 1 and 3, tests/run --e2e-all all five)")
    out = subprocess.run(
        [str(REPO / "tests" / "e2e" / "run"), "--scenarios", str(scenario), "--daemon",
         "bustd", "--repo", str(REPO), "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=900, check=False)
    print(out.stdout)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    assert "1 passed, 0 failed" in out.stdout, out.stdout
