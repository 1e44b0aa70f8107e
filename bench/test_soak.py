"""Unit tests of the soak's pure parts: ``python3 -m unittest discover -s bench``."""

from __future__ import annotations

import unittest

from nsinit import HOSTILE_ARGV0, HOSTILE_COMMS, PWNED, _comm_adj, _soak_kind
from soak import (
    TARGET_GROWTH_KIB,
    LogCounter,
    LogSummary,
    Point,
    SoakRun,
    checks,
    parse_log,
    soak_report,
)

DECISION = (b"warning: dry run: would kill pid=86 name=\"; >/tmp/pwned exe=/usr/bin/python3 "
            b"uid=0 rss=11.2 MiB with SIGTERM: MemAvailable 22.1 GiB; runners-up: none; "
            b"cmdline=a\\nFORGED line")
LOG = b"\n".join([
    b"cannot set own oom_score_adj to -1000 (Permission denied; needs CAP_SYS_RESOURCE)",
    b"bustd 0.1.0 (pid 2) watching /proc: SIGTERM at MemAvailable <= 23.5 GiB; DRY RUN",
    b"warning: memory emergency (MemAvailable 22.1 GiB) but no process may be killed",
    DECISION, DECISION,
    b"status: MemAvailable 21.8 GiB of 23.5 GiB (92.7%), kills 0",
    DECISION,
    b"bustd exiting after 0 kills", b""])
RESULT: dict[str, object] = {
    "count": 1000, "started": 1000, "aborted": "", "spawn_failures": 0,
    "last_spawn_error": "", "bustd_exit": 0, "bustd_exited_early": False,
    "bustd_exit_at_s": -1.0, "kinds": {"grow": 100, "sleep": 900}, "max_live": 40,
    "max_lag_s": 0.01, "child_failures": 0, "orphans": 0}


def points(rss: list[int], fds: list[int] | None = None, step: float = 5.0,
           decisions: list[int] | None = None) -> list[Point]:
    """Return samples every ``step`` s with these VmRSS and descriptor counts."""
    fds = fds or [6] * len(rss)
    decisions = decisions or [5 * i for i in range(len(rss))]
    return [Point(i * step, r, r - 6000, f, f, 1, 10 * i, d + 3, d)
            for i, (r, f, d) in enumerate(zip(rss, fds, decisions))]


def soak_run(pts: list[Point], log: bytes = LOG, pwned: bool = False,
             **result: object) -> SoakRun:
    return SoakRun(pts, {**RESULT, **result}, parse_log(log), pwned, "load 1", "load 2",
                   "/tmp/x.log")


def failed(run: SoakRun, warmup: float = 10.0, seconds: float = 40.0) -> list[str]:
    return [c.label for c in checks(run, warmup, seconds, 5.0) if not c.ok]


class LogTest(unittest.TestCase):
    """Counting bustd's log, and spotting lines a name forged."""

    def test_parse(self) -> None:
        s = parse_log(LOG)
        self.assertEqual((s.lines, s.decisions, s.errors, s.stray), (8, 3, [], []))

    def test_stray_and_errors(self) -> None:
        log = LOG + b"FORGED line\nTraceback (most recent call last):\nerror: check failed: X"
        s = parse_log(log)
        self.assertEqual(s.lines, 11)  # the last line has no newline yet
        self.assertEqual(s.stray, ["FORGED line", "Traceback (most recent call last):"])
        self.assertEqual(s.errors, ["error: check failed: X"])

    def test_stray_shown_escaped(self) -> None:
        s = parse_log(b"\xff\x1b[31m\n")
        self.assertEqual(s.stray, ["\\xff\\x1b[31m"])

    def test_empty(self) -> None:
        self.assertEqual(parse_log(b""), LogSummary(0, 0, [], []))

    def test_counter_across_chunks(self) -> None:
        c = LogCounter()
        for i in range(0, len(LOG), 7):  # chunks that split lines and the decision prefix
            c.feed(LOG[i:i + 7])
        self.assertEqual((c.lines, c.decisions), (8, 3))
        c.feed(b"warning: dry run: would kill pid=1")  # no newline yet: not counted
        self.assertEqual((c.lines, c.decisions), (8, 3))
        c.feed(b" name=x\n")
        self.assertEqual((c.lines, c.decisions), (9, 4))


class VerdictTest(unittest.TestCase):
    """PASS and FAIL against the targets and the conditions of a valid run."""

    def test_pass(self) -> None:
        run = soak_run(points([9000, 9900, 10000, 10020, 10010, 10000 + TARGET_GROWTH_KIB,
                               10000, 10000 + TARGET_GROWTH_KIB, 10000 + TARGET_GROWTH_KIB]))
        self.assertEqual(failed(run), [])
        report = "\n".join(soak_report(run, 10.0, 40.0, 5.0, "py", 100))
        self.assertIn("Soak verdict: **PASS**", report)
        self.assertIn("| VmRSS growth | +64 KiB |", report)
        self.assertNotIn("FAILED", report)

    def test_growth_over_target(self) -> None:
        run = soak_run(points([9000, 9900, 10000, 10000, 10000 + TARGET_GROWTH_KIB + 1]))
        self.assertEqual(failed(run, seconds=20.0),
                         [f"VmRSS growth after the warm-up <= {TARGET_GROWTH_KIB} KiB"])
        report = "\n".join(soak_report(run, 10.0, 20.0, 5.0, "py", 100))
        self.assertIn("Soak verdict: **FAIL**", report)
        self.assertIn("| VmRSS growth | +65 KiB |", report)

    def test_growth_during_warmup_not_counted(self) -> None:
        run = soak_run(points([5000, 9000, 10000, 10000, 10000]))
        self.assertEqual(failed(run, warmup=10.0, seconds=20.0), [])
        self.assertIn("VmRSS growth", failed(run, warmup=0.0, seconds=20.0)[0])

    def test_shrinking_passes(self) -> None:
        self.assertEqual(failed(soak_run(points([10000, 10000, 10000, 9000, 9500])),
                                seconds=20.0), [])

    def test_descriptor_leak(self) -> None:
        run = soak_run(points([10000] * 5, fds=[4, 6, 6, 7, 6]))
        self.assertEqual(failed(run, seconds=20.0),
                         ["open descriptors constant after the warm-up"])
        # before the warm-up (4) is not counted
        self.assertEqual(failed(soak_run(points([10000] * 5, fds=[4, 6, 6, 6, 6])),
                                seconds=20.0), [])

    def test_pwned(self) -> None:
        self.assertEqual(failed(soak_run(points([10000] * 5), pwned=True), seconds=20.0),
                         [f"no {PWNED} created"])

    def test_forged_line_and_error(self) -> None:
        run = soak_run(points([10000] * 5), log=LOG + b"FORGED line\nerror: check failed\n")
        self.assertEqual(len(failed(run, seconds=20.0)), 2)

    def test_silent_interval(self) -> None:
        run = soak_run(points([10000] * 6, decisions=[0, 5, 10, 15, 15, 20]))
        self.assertEqual(failed(run, seconds=25.0),
                         ["a dry-run decision in every sampling interval after the warm-up"])

    def test_short_final_interval_may_be_silent(self) -> None:
        pts = points([10000] * 5)
        pts.append(pts[-1]._replace(t=pts[-1].t + 0.5))  # the sample after the load
        self.assertEqual(failed(soak_run(pts), seconds=20.0), [])

    def test_bustd_died(self) -> None:
        run = soak_run(points([10000] * 4), bustd_exited_early=True, bustd_exit=1,
                       bustd_exit_at_s=12.0)
        self.assertEqual(failed(run, seconds=40.0),
                         ["bustd ran to the end and exited 0 at SIGTERM"])

    def test_not_all_started(self) -> None:
        run = soak_run(points([10000] * 5), started=990, spawn_failures=10,
                       last_spawn_error="sleep: [Errno 11] EAGAIN")
        verdict = checks(run, 10.0, 20.0, 5.0)
        bad = [c for c in verdict if not c.ok]
        self.assertEqual([c.label for c in bad], ["every process started"])
        self.assertIn("990 of 1000", bad[0].detail)
        self.assertIn("EAGAIN", bad[0].detail)
        aborted = soak_run(points([10000] * 5), aborted="MemAvailable fell")
        self.assertEqual(failed(aborted, seconds=20.0), ["every process started"])

    def test_too_short(self) -> None:
        verdict = checks(soak_run(points([10000, 10000])), 10.0, 20.0, 5.0)
        self.assertEqual([c.ok for c in verdict], [False])
        report = "\n".join(soak_report(soak_run([]), 10.0, 20.0, 5.0, "py", 100))
        self.assertIn("Soak verdict: **FAIL**", report)


class LoadTest(unittest.TestCase):
    """The namespace's mix of processes and its hostile names."""

    def test_mix(self) -> None:
        kinds = [_soak_kind(i) for i in range(1000)]
        self.assertEqual({k: kinds.count(k) for k in set(kinds)},
                         {"grow": 100, "comm": 100, "argv": 50, "sleep": 400, "flash": 350})
        self.assertEqual({_comm_adj(i) for i in range(1000)}, {1000})
        self.assertEqual({_comm_adj(i) for i in range(1000, 2000)}, {950})

    def test_names_fit_and_only_touch_the_marker(self) -> None:
        for name in HOSTILE_COMMS:
            self.assertLessEqual(len(name), 15, name)  # the kernel keeps 15 bytes of comm
        for name in HOSTILE_COMMS + HOSTILE_ARGV0:
            self.assertNotIn(b"\0", name)
            self.assertNotIn(b"rm ", name)
            if b"/" in name:
                self.assertIn(PWNED.encode(), name)


if __name__ == "__main__":
    unittest.main()
