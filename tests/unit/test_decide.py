"""decide.decide, thresholds and sleep_for as pure functions."""

from __future__ import annotations

import signal

import pytest

from bustd.config import Config
from bustd.decide import (
    MAX_SLEEP_POLLING,
    MAX_SLEEP_TRIGGER,
    MEM_FILL_KIB_S,
    MIN_SLEEP,
    SWAP_FILL_KIB_S,
    decide,
    sleep_for,
    thresholds,
)
from bustd.meminfo import MemInfo

TOTAL = 10_000_000  # KiB, so 1 % is 100000 KiB
SWAP = 4_000_000
CFG = Config()  # TERM at 10 %/10 %, KILL at 5 %/5 %, PSI 25 % below 15 % MemAvailable


def mem(avail_pct: float, swap_free_pct: float = 0.0, swap_total: int = SWAP) -> MemInfo:
    return MemInfo(TOTAL, int(TOTAL * avail_pct / 100), swap_total,
                   int(swap_total * swap_free_pct / 100))


def sig(m: MemInfo, stall: float | None = None, cfg: Config = CFG) -> int | None:
    d = decide(m, stall, cfg)
    return None if d is None else d.signal


# -- memory levels ----------------------------------------------------------

@pytest.mark.parametrize(("avail", "swap", "expected"), [
    (50, 50, None),
    (50, 0, None),       # swap gone but plenty of RAM
    (3, 50, None),       # RAM low but swap free: the kernel can still swap
    (10.01, 10, None),
    (10, 10, signal.SIGTERM),  # at the level counts
    (7, 8, signal.SIGTERM),
    (5.01, 4, signal.SIGTERM),
    (4, 5.01, signal.SIGTERM),
    (5, 5, signal.SIGKILL),
    (1, 0, signal.SIGKILL),
    (0, 0, signal.SIGKILL),
])
def test_memory_levels(avail: float, swap: float, expected: int | None) -> None:
    assert sig(mem(avail, swap)) == expected


def test_no_swap_counts_as_none_free() -> None:
    assert sig(mem(50, swap_total=0)) is None
    assert sig(mem(9, swap_total=0)) == signal.SIGTERM
    assert sig(mem(5, swap_total=0)) == signal.SIGKILL
    d = decide(mem(9, swap_total=0), None, CFG)
    assert d is not None
    assert "no swap" in d.reason


def test_reason_names_the_figures() -> None:
    d = decide(mem(4, 2), None, CFG)
    assert d is not None
    assert d.reason.startswith("MemAvailable ")
    assert "(4.0%)" in d.reason and "SwapFree" in d.reason and "(2.0%)" in d.reason
    assert "SIGKILL" in repr(d)


def test_absolute_kib_levels_lower_wins() -> None:
    # 100000 KiB (1 %) is below the 10 % level, so it applies.
    cfg = Config(mem_term_kib=100_000, mem_kill_kib=50_000)
    t = thresholds(cfg, mem(50))
    assert (t.mem_term, t.mem_kill) == (100_000, 50_000)
    assert sig(mem(2, 0), cfg=cfg) is None
    assert sig(mem(1, 0), cfg=cfg) == signal.SIGTERM
    assert sig(mem(0.5, 0), cfg=cfg) == signal.SIGKILL
    # 5 GB is above the 10 % level: the percentage (lower) applies.
    cfg = Config(mem_term_kib=5_000_000, mem_kill_kib=4_000_000)
    t = thresholds(cfg, mem(50))
    assert (t.mem_term, t.mem_kill) == (1_000_000, 500_000)
    assert sig(mem(20, 0), cfg=cfg) is None
    # Swap: the same rule.
    cfg = Config(swap_term_kib=40_000, swap_kill_kib=0)
    t = thresholds(cfg, mem(50))
    assert (t.swap_term, t.swap_kill) == (40_000, 0)
    assert sig(mem(1, 1.1), cfg=cfg) is None       # 44000 KiB free > 40000
    assert sig(mem(1, 0.9), cfg=cfg) == signal.SIGTERM
    assert sig(mem(1, 0.1), cfg=cfg) == signal.SIGTERM  # kill level 0 KiB
    assert sig(mem(1, 0), cfg=cfg) == signal.SIGKILL


def test_percent_100_with_kib_is_kib_alone() -> None:
    # What the CLI builds for --mem-size alone.
    cfg = Config(mem_term_percent=100.0, mem_kill_percent=100.0, mem_term_kib=300_000,
                 mem_kill_kib=150_000)
    assert sig(mem(3.1, 0), cfg=cfg) is None
    assert sig(mem(3, 0), cfg=cfg) == signal.SIGTERM
    assert sig(mem(1.5, 0), cfg=cfg) == signal.SIGKILL


# -- pressure ---------------------------------------------------------------

def test_psi_kills_only_below_the_memory_gate() -> None:
    assert sig(mem(15, 50), stall=25.0) == signal.SIGTERM
    assert sig(mem(12, 50), stall=99.0) == signal.SIGTERM
    d = decide(mem(12, 50), 30.0, CFG)
    assert d is not None and "stall 30%" in d.reason and "some" in d.reason
    # Pressure alone never kills while memory is plentiful.
    assert sig(mem(15.01, 50), stall=100.0) is None
    assert sig(mem(90, 50), stall=100.0) is None
    # Below the cutoff, or no reading yet: nothing.
    assert sig(mem(12, 50), stall=24.99) is None
    assert sig(mem(12, 50), stall=None) is None


def test_psi_never_escalates_to_kill() -> None:
    assert sig(mem(1, 50), stall=100.0) == signal.SIGTERM


def test_memory_reason_wins_over_psi() -> None:
    d = decide(mem(4, 0), 100.0, CFG)
    assert d is not None and d.signal == signal.SIGKILL and "stall" not in d.reason


def test_psi_cutoff_zero_disables_pressure() -> None:
    cfg = Config(psi_cutoff=0.0)
    assert sig(mem(12, 50), stall=100.0, cfg=cfg) is None
    assert sig(mem(12, 50), stall=0.0, cfg=cfg) is None
    assert sig(mem(5, 0), stall=100.0, cfg=cfg) == signal.SIGKILL


def test_psi_gate_and_cutoff_follow_config() -> None:
    cfg = Config(psi_cutoff=60.0, psi_mem_percent=40.0)
    assert sig(mem(39, 50), stall=60.0, cfg=cfg) == signal.SIGTERM
    assert sig(mem(41, 50), stall=100.0, cfg=cfg) is None
    assert sig(mem(39, 50), stall=59.0, cfg=cfg) is None


# -- sleep_for ----------------------------------------------------------------

def test_sleep_floor() -> None:
    assert MIN_SLEEP == 0.1
    assert sleep_for(mem(10, 10), CFG, False) == MIN_SLEEP
    assert sleep_for(mem(0, 0), CFG, True) == MIN_SLEEP
    assert sleep_for(mem(10.1, 0), CFG, False) == MIN_SLEEP  # 10000 KiB headroom


def test_sleep_cap_polling() -> None:
    assert MAX_SLEEP_POLLING == 1.0
    big = MemInfo(1 << 30, 1 << 30, 1 << 28, 1 << 28)
    assert sleep_for(big, CFG, False) == 1.0


def test_sleep_cap_with_trigger_only_above_psi_gate() -> None:
    assert MAX_SLEEP_TRIGGER == 10.0
    big = MemInfo(1 << 30, 1 << 30, 1 << 28, 1 << 28)
    assert sleep_for(big, CFG, True) == 10.0
    # Below the PSI gate the stall rate must be sampled: back to 1 s even with a trigger.
    huge = 1 << 36  # so that 14 % of it is still many seconds of headroom
    assert sleep_for(MemInfo(huge, huge * 14 // 100, 0, 0), CFG, True) == 1.0
    assert sleep_for(MemInfo(huge, huge * 16 // 100, 0, 0), CFG, True) == 10.0


def test_sleep_proportional_to_headroom() -> None:
    assert MEM_FILL_KIB_S == 6000 * 1024
    assert SWAP_FILL_KIB_S == 800 * 1024
    cfg = Config(psi_mem_percent=0.0)  # no PSI gate: the 10 s cap applies with a trigger
    total = 100 * 6000 * 1024  # 10 % of it is 10 s of RAM filling
    # 3 s of RAM headroom above the TERM level, no swap.
    m = MemInfo(total, total // 10 + 3 * 6000 * 1024, 0, 0)
    assert sleep_for(m, cfg, True) == pytest.approx(3.0)
    # Plus 2 s of swap headroom above its TERM level.
    swap_total = 10 * 800 * 1024
    m = MemInfo(total, total // 10 + 3 * 6000 * 1024, swap_total,
                swap_total // 10 + 2 * 800 * 1024)
    assert sleep_for(m, cfg, True) == pytest.approx(5.0)
    # 0.5 s of RAM headroom: under the 1 s polling cap.
    m = MemInfo(total, total // 10 + 3000 * 1024, 0, 0)
    assert sleep_for(m, cfg, False) == pytest.approx(0.5)
    # Below the TERM level of RAM only swap headroom counts, never negative.
    m = MemInfo(total, 0, swap_total, swap_total // 10 + 400 * 1024)
    assert sleep_for(m, cfg, True) == pytest.approx(0.5)
