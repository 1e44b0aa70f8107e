"""Pressure Stall Information: parsing, a short-window stall rate, triggers."""
# See the kernel's Documentation/accounting/psi.rst. ``avg10`` is an
# exponentially weighted average over about ten seconds: it keeps reporting a
# stall for several seconds after the cause is gone, so a daemon that acts on it
# kills again and again after the victim has died. bustd instead differentiates
# the cumulative ``total`` counter (microseconds stalled) over about a second.

from __future__ import annotations

import errno
import os

__all__ = ["Pressure", "RateMeter", "StallMeter", "StallRun", "arm_trigger",
           "parse_pressure", "read_pressure"]


class Pressure:
    """One reading of a PSI file: averages in percent, totals in microseconds."""

    __slots__ = ("some_avg10", "some_avg60", "some_avg300", "some_total",
                 "full_avg10", "full_avg60", "full_avg300", "full_total")

    def __init__(self, some: tuple[float, float, float, int],
                 full: tuple[float, float, float, int]) -> None:
        self.some_avg10, self.some_avg60, self.some_avg300, self.some_total = some
        self.full_avg10, self.full_avg60, self.full_avg300, self.full_total = full

    def total(self, metric: str) -> int:
        """Return the ``total`` of ``metric`` ("some" or "full")."""
        return self.full_total if metric == "full" else self.some_total

    def avg10(self, metric: str) -> float:
        """Return ``avg10`` of ``metric`` ("some" or "full")."""
        return self.full_avg10 if metric == "full" else self.some_avg10


def _parse_line(line: bytes) -> tuple[float, float, float, int]:
    """Return (avg10, avg60, avg300, total) of one PSI line; raises ValueError."""
    values: dict[bytes, bytes] = {}
    for item in line.split()[1:]:
        key, sep, value = item.partition(b"=")
        if not sep:
            raise ValueError(f"pressure: malformed item {item!r}")
        values[key] = value
    try:
        return (float(values[b"avg10"]), float(values[b"avg60"]),
                float(values[b"avg300"]), int(values[b"total"]))
    except KeyError as err:
        raise ValueError(f"pressure: field {err.args[0].decode()} missing") from None
    except ValueError:
        raise ValueError(f"pressure: malformed line {line!r}") from None


def parse_pressure(buf: bytes) -> Pressure:
    """Return the Pressure parsed from the text of a PSI file; raises ValueError
    if ``some`` is missing or malformed."""
    # A file without a ``full`` line (the CPU file of kernels before 5.13) reads
    # as zero full stall.
    some = full = None
    for line in buf.splitlines():
        if line.startswith(b"some "):
            some = _parse_line(line)
        elif line.startswith(b"full "):
            full = _parse_line(line)
    if some is None:
        raise ValueError("pressure: no 'some' line")
    return Pressure(some, full or (0.0, 0.0, 0.0, 0))


def read_pressure(fd: int) -> Pressure:
    """Return the Pressure read from a kept-open PSI file; raises OSError, ValueError."""
    return parse_pressure(os.pread(fd, 4096, 0))


class RateMeter:
    """The rate of a growing counter over the last ``window`` seconds."""
    # Feed it (monotonic time, counter) samples; it keeps the newest sample
    # that is at least ``window`` old as the reference, so the rate covers a
    # little over one window and follows reality within about that long.

    __slots__ = ("window", "min_span", "_samples")

    def __init__(self, window: float = 1.0, min_span: float = 0.2) -> None:
        self.window = window
        self.min_span = min_span
        self._samples: list[tuple[float, int]] = []

    def reset(self) -> None:
        """Forget all samples (after a kill, so old stall is not counted again)."""
        self._samples.clear()

    def add(self, now: float, count: int) -> None:
        """Record the counter read at time ``now`` (seconds)."""
        samples = self._samples
        if samples and (count < samples[-1][1] or now <= samples[-1][0]):
            samples.clear()  # counter or clock went backwards: start over
        samples.append((now, count))
        while len(samples) > 2 and samples[1][0] <= now - self.window:
            del samples[0]

    def start(self) -> float | None:
        """Return when the interval :meth:`rate` covers began, or None."""
        return self._samples[0][0] if len(self._samples) >= 2 else None

    def rate(self) -> float | None:
        """Return counts per second, or None before ``min_span`` of samples."""
        samples = self._samples
        if len(samples) < 2:
            return None
        (t0, v0), (t1, v1) = samples[0], samples[-1]
        span = t1 - t0
        if span < self.min_span:
            return None
        return (v1 - v0) / span


class StallMeter(RateMeter):
    """Percent of wall time stalled, from PSI's ``total`` (microseconds stalled)."""

    __slots__ = ()

    def percent(self) -> float | None:
        """Return the stall percentage, or None before ``min_span`` of samples."""
        rate = self.rate()
        return None if rate is None else min(100.0, rate / 10_000.0)


class StallRun:
    """How long a condition (stall at or above the cutoff, and swap-ins where
    there is swap) has held without a break."""
    # A pressure kill needs the stall to persist (issue 7): a machine with
    # zram stalls while the kernel moves the excess of a growing program into
    # swap, and that stall ends by itself once the program stops growing.
    # Thrashing (a working set larger than RAM) stalls without end, and pages
    # come back in from swap as fast as they go out.

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since: float | None = None

    def reset(self) -> None:
        """Forget the current run (after a kill, or when memory is plentiful)."""
        self.since = None

    def update(self, start: float, holds: bool) -> None:
        """Record whether the condition held over an interval that began at ``start``."""
        if not holds:
            self.since = None
        elif self.since is None:
            self.since = start

    def seconds(self, now: float) -> float:
        """Return how long the stall has stayed at or above the cutoff (0 if not)."""
        return 0.0 if self.since is None else max(0.0, now - self.since)


# Windows tried for a kernel trigger, shortest first. With CAP_SYS_RESOURCE
# any window of 0.5-10 s is accepted; without it, recent kernels accept only
# multiples of 2 s (kernel/sched/psi.c, "unprivileged" triggers).
TRIGGER_WINDOWS_US = (1_000_000, 2_000_000)


def arm_trigger(path: str, metric: str, percent: float) -> tuple[int, float] | None:
    """Register a PSI trigger that fires when ``metric`` stall reaches ``percent``."""
    # Returns (fd, window seconds): poll the fd for POLLPRI. Returns None where
    # triggers are not allowed (no PSI, no permission, old kernel).
    for window_us in TRIGGER_WINDOWS_US:
        stall_us = min(window_us - 1, max(1000, int(window_us * percent / 100.0)))
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            os.write(fd, b"%s %d %d\0" % (metric.encode(), stall_us, window_us))
        except OSError as err:
            os.close(fd)
            if err.errno == errno.EINVAL:
                continue
            return None
        return fd, window_us / 1e6
    return None
