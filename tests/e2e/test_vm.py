"""The VM scenarios as pytest tests: each boots a throwaway QEMU guest.

Which scenarios run is set by $BUSTD_E2E, which tests/run sets: "1" runs
CI_SUBSET and the cgroup and systemd tests (CI, every change), "all" runs
everything, "0" none. Run directly without it, they are skipped and say so.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.scenarios import SCENARIOS

REPO = Path(__file__).resolve().parents[2]
CHOICE = os.environ.get("BUSTD_E2E", "")
# CI's subset (tests/e2e/README.md): fast allocation, thrashing, both ranking
# cases and the zram-absorb variant with the longest stall; about 10-14
# minutes under TCG.
CI_SUBSET = {1, 3, 6, 7, 9}
SELECTED = {"1": CI_SUBSET, "all": set(SCENARIOS)}.get(CHOICE, set())


# The two VM tests that are not memory scenarios (tests/e2e/special.py): the
# cgroup v2 test (about 3 minutes) and the unit under a booted systemd (about
# 5 minutes); CI runs both, nothing else covers them.
SPECIAL_SELECTED = {"1": {"cgroup", "systemd"}, "all": {"cgroup", "systemd"}}.get(CHOICE, set())


@pytest.mark.parametrize("name", ["cgroup", "systemd"])
def test_special_in_vm(name: str, tmp_path: Path) -> None:
    if name not in SPECIAL_SELECTED:
        pytest.skip(f"VM test {name} not selected (BUSTD_E2E={CHOICE or 'unset'}; "
                    "tests/run runs it)")
    out = subprocess.run(
        [str(REPO / "tests" / "e2e" / "run"), "--scenarios", name, "--repo", str(REPO),
         "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=2700, check=False)
    print(out.stdout)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    assert " 0 failed" in out.stdout and "FAIL" not in out.stdout, out.stdout


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_bustd_in_vm(scenario: int, tmp_path: Path) -> None:
    if scenario not in SELECTED:
        pytest.skip(f"VM scenario {scenario} not selected (BUSTD_E2E={CHOICE or 'unset'}; "
                    f"tests/run runs {sorted(CI_SUBSET)}, tests/run --e2e-all all)")
    out = subprocess.run(
        [str(REPO / "tests" / "e2e" / "run"), "--scenarios", str(scenario), "--daemon",
         "bustd", "--repo", str(REPO), "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=900, check=False)
    print(out.stdout)
    logs = daemon_logs(tmp_path)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n{logs}"
    assert "1 passed, 0 failed" in out.stdout, f"{out.stdout}\n{logs}"


def daemon_logs(results: Path, limit: int = 6000) -> str:
    """Return the daemon's log of each run under ``results``, for a failure's message.

    CI keeps only the test's output: without the log a wrong kill there
    says whom it killed but not why.
    """
    parts = []
    for path in sorted(results.rglob("daemon.log")):
        text = path.read_text(errors="replace")
        parts.append(f"--- {path.relative_to(results)}\n{text[-limit:]}")
    return "\n".join(parts) or f"(no daemon.log under {results})"
