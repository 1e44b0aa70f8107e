"""The growth tracker over simulated sample histories (pure, no I/O)."""

from __future__ import annotations

import pytest

from bustd.growth import FADE_S, MAX_TRACKED, MIN_SPAN, WINDOW, Tracker

MIB = 1024


def feed(t: Tracker, pid: int, start: int, sizes: list[int], t0: float = 100.0,
         step: float = 1.0) -> float:
    """Add one sample per ``step`` seconds; return the time of the last one."""
    now = t0
    for i, kib in enumerate(sizes):
        now = t0 + i * step
        t.add(now, pid, start, kib)
    return now


def test_no_history_no_growth() -> None:
    t = Tracker()
    assert t.growth(1, 10) == (0, 0.0)
    t.add(100.0, 1, 10, 5 * MIB)
    assert t.growth(1, 10) == (0, 0.0)  # one sample is no history


def test_steady_growth() -> None:
    t = Tracker()
    feed(t, 1, 10, [i * 8 * MIB for i in range(5)])
    assert t.growth(1, 10) == (32 * MIB, 4.0)


def test_growth_covers_the_window_and_forgets_older_samples() -> None:
    t = Tracker(window=10.0)
    # Grew 100 MiB in the first 5 s, then stayed: 20 s later nothing is recent.
    feed(t, 1, 10, [i * 20 * MIB for i in range(6)] + [100 * MIB] * 20)
    grew, span = t.growth(1, 10)
    assert grew == 0
    assert WINDOW <= span <= WINDOW + 1.0


def test_growth_within_the_window_is_counted_whole() -> None:
    t = Tracker(window=10.0)
    feed(t, 1, 10, [0] * 15 + [i * 10 * MIB for i in range(1, 6)])
    grew, span = t.growth(1, 10)
    assert grew == 50 * MIB and span == pytest.approx(10.0)


def test_shrinking_process_has_no_growth() -> None:
    t = Tracker()
    feed(t, 1, 10, [500 * MIB, 400 * MIB, 300 * MIB])
    assert t.growth(1, 10) == (0, 2.0)


def test_shrink_then_regrow_counts_only_net_growth() -> None:
    t = Tracker()
    feed(t, 1, 10, [300 * MIB, 100 * MIB, 350 * MIB])
    assert t.growth(1, 10) == (50 * MIB, 2.0)


def test_recycled_pid_starts_afresh() -> None:
    t = Tracker()
    now = feed(t, 7, 1000, [0, 100 * MIB, 200 * MIB])
    # PID 7 exits; a new process gets PID 7 (another start time), 250 MiB at once.
    t.add(now + 1, 7, 5555, 250 * MIB)
    assert t.growth(7, 5555) == (0, 0.0)
    assert t.growth(7, 1000) == (0, 0.0)  # the old identity is gone too
    t.add(now + 2, 7, 5555, 260 * MIB)
    assert t.growth(7, 5555) == (10 * MIB, 1.0)


def test_many_growers_at_once() -> None:
    t = Tracker()
    for pid in range(1, 13):
        feed(t, pid, 10, [i * 8 * MIB for i in range(6)])
    assert {t.growth(pid, 10) for pid in range(1, 13)} == {(40 * MIB, 5.0)}


def test_prune_forgets_processes_not_kept() -> None:
    t = Tracker()
    for pid in (1, 2, 3):
        feed(t, pid, 10, [0, MIB])
    t.prune({1, 3})
    assert sorted(t.tracked()) == [1, 3]
    assert t.growth(2, 10) == (0, 0.0)
    t.clear()
    assert len(t) == 0


def test_bounded_number_of_histories() -> None:
    t = Tracker()
    for pid in range(MAX_TRACKED + 50):
        t.add(1.0, pid, 10, MIB)
    assert len(t) == MAX_TRACKED
    # A known PID with a new start time replaces its own entry, even when full.
    t.add(2.0, 0, 99, MIB)
    assert len(t) == MAX_TRACKED and t.growth(0, 99) == (0, 0.0)


def test_clock_going_backwards_starts_over() -> None:
    t = Tracker()
    feed(t, 1, 10, [0, 50 * MIB])
    t.add(50.0, 1, 10, 60 * MIB)
    assert t.growth(1, 10) == (0, 0.0)


# -- the remembered pace (a grower that paused) --------------------------------

def test_the_pace_of_a_steady_grower_is_its_growth_rate() -> None:
    t = Tracker()
    now = feed(t, 1, 10, [i * 8 * MIB for i in range(5)])
    assert t.pace(1, 10, now) == pytest.approx(8 * MIB)


def test_the_pace_outlives_the_window_and_fades_over_fade_s() -> None:
    t = Tracker(window=10.0, fade=30.0)
    # 40 MiB in 4 s (10 MiB/s), then the same size for 12 s.
    now = feed(t, 1, 10, [i * 10 * MIB for i in range(5)] + [40 * MIB] * 12)
    assert t.growth(1, 10)[0] == 0  # out of the window
    assert t.pace(1, 10, now) == pytest.approx(10 * MIB * (1 - 12 / 30))
    assert t.pace(1, 10, now + 18.0) == 0.0  # 30 s after the spell
    assert t.pace(1, 10, now + 100.0) == 0.0  # never negative


def test_a_faster_spell_replaces_the_faded_one_and_a_slower_does_not() -> None:
    t = Tracker(window=10.0, fade=30.0)
    now = feed(t, 1, 10, [0, 10 * MIB, 20 * MIB])  # 10 MiB/s
    now = feed(t, 1, 10, [20 * MIB + i * MIB for i in range(1, 4)], t0=now + 1.0)  # slower
    assert t.pace(1, 10, now) == pytest.approx(10 * MIB * (1 - 3 / FADE_S))
    now = feed(t, 1, 10, [23 * MIB + i * 30 * MIB for i in range(1, 4)], t0=now + 1.0)
    assert t.pace(1, 10, now) > 10 * MIB  # the new, faster spell


def test_no_pace_from_less_than_min_span_of_history() -> None:
    t = Tracker()
    t.add(100.0, 1, 10, 0)
    t.add(100.0 + MIN_SPAN / 2, 1, 10, 50 * MIB)  # a jump over half a second
    assert t.growth(1, 10)[0] == 50 * MIB  # counted as growth, as before ...
    assert t.pace(1, 10, 100.5) == 0.0  # ... but not remembered as a pace


def test_a_recycled_pid_has_no_pace_and_a_backwards_clock_forgets_it() -> None:
    t = Tracker()
    now = feed(t, 1, 10, [i * 8 * MIB for i in range(5)])
    assert t.pace(1, 11, now) == 0.0  # another process with the same PID
    t.add(now - 50.0, 1, 10, 40 * MIB)  # the clock went backwards
    assert t.pace(1, 10, now - 50.0) == 0.0
