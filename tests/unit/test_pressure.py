"""parse_pressure on literal text; StallMeter in simulated time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bustd.pressure import StallMeter, parse_pressure, read_pressure
from tests.fakeproc import FakeProc

MEMORY = (b"some avg10=1.50 avg60=2.25 avg300=0.10 total=123456\n"
          b"full avg10=0.50 avg60=0.75 avg300=0.05 total=65432\n")


def test_some_and_full() -> None:
    p = parse_pressure(MEMORY)
    assert (p.some_avg10, p.some_avg60, p.some_avg300, p.some_total) == (1.5, 2.25, 0.1, 123456)
    assert (p.full_avg10, p.full_avg60, p.full_avg300, p.full_total) == (0.5, 0.75, 0.05, 65432)
    assert p.total("some") == 123456
    assert p.total("full") == 65432
    assert p.avg10("some") == 1.5
    assert p.avg10("full") == 0.5


def test_missing_full_reads_as_zero() -> None:
    p = parse_pressure(b"some avg10=3.00 avg60=2.00 avg300=1.00 total=999\n")
    assert p.some_total == 999
    assert (p.full_avg10, p.full_avg60, p.full_avg300, p.full_total) == (0.0, 0.0, 0.0, 0)


def test_items_in_any_order_and_unknown_items_ignored() -> None:
    p = parse_pressure(b"some total=7 avg300=0.00 extra=1 avg60=0.00 avg10=9.99")
    assert (p.some_total, p.some_avg10) == (7, 9.99)


def test_huge_total() -> None:
    total = 2**63 - 1
    p = parse_pressure(b"some avg10=0.00 avg60=0.00 avg300=0.00 total=%d\n" % total)
    assert p.some_total == total


@pytest.mark.parametrize(("buf", "message"), [
    (b"", "no 'some' line"),
    (b"full avg10=0.00 avg60=0.00 avg300=0.00 total=1\n", "no 'some' line"),
    (b"\xff\xfe garbage\n", "no 'some' line"),
    (b"some avg10=0.00 avg60=0.00 total=1\n", "avg300 missing"),
    (b"some avg10=0.00 avg60=0.00 avg300=0.00\n", "total missing"),
    (b"some avg10=x avg60=0.00 avg300=0.00 total=1\n", "malformed line"),
    (b"some avg10=0.00 avg60=0.00 avg300=0.00 total=1.5\n", "malformed line"),
    (b"some avg10=0.00 avg60=0.00 avg300=0.00 total=-\n", "malformed line"),
    (b"some avg10 0.00 avg60=0.00 avg300=0.00 total=1\n", "malformed item"),
    (b"some avg10=0.00 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.00\n", "missing"),
])
def test_malformed_raises_value_error(buf: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_pressure(buf)


def test_read_pressure_kept_open(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    fake.set_pressure(some_total=10, full_total=5)
    fd = fake.fs.open("pressure/memory")
    try:
        assert read_pressure(fd).some_total == 10
        fake.set_pressure(some_total=20_000_000, full_total=7)
        p = read_pressure(fd)
        assert (p.some_total, p.full_total) == (20_000_000, 7)
    finally:
        os.close(fd)


class Sim:
    """A stalled-time counter growing at ``rate`` percent of wall time."""

    def __init__(self) -> None:
        self.now = 100.0
        self.total = 5_000_000
        self.rate = 0.0

    def step(self, dt: float) -> None:
        self.now += dt
        self.total += round(dt * 1e6 * self.rate / 100.0)


def feed(meter: StallMeter, sim: Sim, seconds: float, dt: float = 0.1) -> list[float | None]:
    out: list[float | None] = []
    for _ in range(round(seconds / dt)):
        sim.step(dt)
        meter.add(sim.now, sim.total)
        out.append(meter.percent())
    return out


def test_none_until_min_span() -> None:
    meter = StallMeter(window=1.0, min_span=0.2)
    assert meter.percent() is None
    meter.add(10.0, 0)
    assert meter.percent() is None
    meter.add(10.125, 62_500)
    assert meter.percent() is None  # 0.125 s < min_span
    meter.add(10.25, 125_000)
    assert meter.percent() == pytest.approx(50.0)


def test_steady_rate() -> None:
    meter, sim = StallMeter(), Sim()
    sim.rate = 30.0
    values = feed(meter, sim, 5.0)
    assert values[-1] == pytest.approx(30.0, abs=0.01)
    assert all(v is None or v == pytest.approx(30.0, abs=0.01) for v in values)


@pytest.mark.parametrize(("before", "after"), [(0.0, 80.0), (90.0, 5.0), (20.0, 60.0)])
def test_step_change_is_followed_within_about_a_second(before: float, after: float) -> None:
    meter, sim = StallMeter(window=1.0), Sim()
    sim.rate = before
    feed(meter, sim, 5.0)
    assert meter.percent() == pytest.approx(before, abs=0.01)
    sim.rate = after
    values = feed(meter, sim, 3.0)
    # Within 1.2 s of the step (window plus one or two samples) the rate is the new one...
    assert values[11] == pytest.approx(after, abs=0.01)
    assert all(v == pytest.approx(after, abs=0.01) for v in values[11:])
    # ...and half a second after the step it has moved, but not all the way.
    assert min(before, after) < values[4] < max(before, after)  # type: ignore[operator]


def test_old_samples_are_dropped() -> None:
    meter, sim = StallMeter(window=1.0), Sim()
    sim.rate = 50.0
    feed(meter, sim, 30.0)
    assert len(meter._samples) <= 12


def test_rate_capped_at_100() -> None:
    meter = StallMeter()
    meter.add(1.0, 0)
    meter.add(2.0, 5_000_000)  # more stall than wall time (several CPUs)
    assert meter.percent() == 100.0


def test_reset_forgets_history() -> None:
    meter, sim = StallMeter(), Sim()
    sim.rate = 90.0
    feed(meter, sim, 2.0)
    meter.reset()
    assert meter.percent() is None
    sim.rate = 10.0
    values = feed(meter, sim, 0.4)
    assert values[0] is None
    assert values[-1] == pytest.approx(10.0, abs=0.01)  # no trace of the 90 %


def test_counter_going_backwards_starts_over() -> None:
    meter = StallMeter()
    meter.add(1.0, 9_000_000)
    meter.add(1.5, 9_400_000)
    assert meter.percent() == pytest.approx(80.0)
    meter.add(2.0, 100)  # counter reset (e.g. a new cgroup's file): no negative rate
    assert meter.percent() is None
    meter.add(2.5, 100 + 100_000)
    assert meter.percent() == pytest.approx(20.0)


def test_clock_going_backwards_starts_over() -> None:
    meter = StallMeter()
    meter.add(5.0, 0)
    meter.add(6.0, 500_000)
    meter.add(4.0, 600_000)
    assert meter.percent() is None
    meter.add(4.5, 650_000)
    assert meter.percent() == pytest.approx(10.0)
