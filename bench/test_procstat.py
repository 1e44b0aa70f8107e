"""Unit tests of the /proc parsers: ``python3 -m unittest discover -s bench``."""

from __future__ import annotations

import os
import unittest

from procstat import (
    children_of,
    count_fds,
    ns_child,
    parse_kib_fields,
    parse_nspid,
    parse_schedstat_ns,
    parse_stat_cpu_ticks,
    parse_status_ctxt,
    read_cpu_ticks,
    read_sample,
)

STATUS = b"""Name:\tfoo) Z (bar
Umask:\t0022
State:\tS (sleeping)
VmLck:\t    2400 kB
VmRSS:\t    1700 kB
RssAnon:\t     120 kB
Threads:\t1
voluntary_ctxt_switches:\t61
nonvoluntary_ctxt_switches:\t3
"""


class ParseTest(unittest.TestCase):
    """The pure parsers, on literal and hostile input."""

    def test_kib_fields(self) -> None:
        fields = parse_kib_fields(STATUS)
        self.assertEqual(fields["VmRSS"], 1700)
        self.assertEqual(fields["RssAnon"], 120)
        self.assertEqual(fields["VmLck"], 2400)
        self.assertNotIn("Threads", fields)  # no kB unit

    def test_kib_fields_garbage(self) -> None:
        self.assertEqual(parse_kib_fields(b"\x00\xff:: kB\nPss: x kB\n"), {})

    def test_ctxt(self) -> None:
        self.assertEqual(parse_status_ctxt(STATUS), 64)

    def test_ctxt_missing(self) -> None:
        with self.assertRaises(ValueError):
            parse_status_ctxt(b"voluntary_ctxt_switches:\t1\n")

    def test_stat_cpu_ticks(self) -> None:
        tail = b" S 1 1 1 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0 55 1000 90\n"
        self.assertEqual(parse_stat_cpu_ticks(b"42 (sleep)" + tail), 281)
        # a name that would shift the fields of a parser splitting at the first ')'
        self.assertEqual(parse_stat_cpu_ticks(b"42 (a) Z 1 2 (b)" + tail), 281)
        self.assertEqual(parse_stat_cpu_ticks(b"42 (x\n) 7 7)" + tail), 281)

    def test_stat_cpu_ticks_garbage(self) -> None:
        for bad in (b"", b"42 sleep S 1", b"42 (sleep) S 1 1 1", b"42 (x) S 1 1 1 0 -1 4 1 0 "
                    b"0 0 x 31"):
            with self.assertRaises(ValueError, msg=bad):
                parse_stat_cpu_ticks(bad)

    def test_nspid(self) -> None:
        self.assertEqual(parse_nspid(STATUS + b"NSpid:\t4242\t2\n"), [4242, 2])
        self.assertEqual(parse_nspid(b"NSpid:\t17\n"), [17])
        for bad in (STATUS, b"NSpid:\n", b"NSpid:\t1 x\n", b"\xff"):
            with self.assertRaises(ValueError, msg=bad):
                parse_nspid(bad)

    def test_schedstat(self) -> None:
        self.assertEqual(parse_schedstat_ns(b"123456 789 10\n"), 123456)
        with self.assertRaises(ValueError):
            parse_schedstat_ns(b"")


class LiveTest(unittest.TestCase):
    """The readers, on this very process."""

    def test_read_self(self) -> None:
        sample = read_sample(os.getpid())
        self.assertGreater(sample.vm_rss, 0)
        self.assertGreater(sample.pss, 0)
        self.assertGreater(sample.cpu_ns, 0)
        self.assertGreaterEqual(sample.threads, 1)

    def test_children_of_parent(self) -> None:
        self.assertIn(os.getpid(), children_of(os.getppid()))

    def test_cpu_ticks_and_fds_of_self(self) -> None:
        self.assertGreaterEqual(read_cpu_ticks(os.getpid()), 0)
        before = count_fds(os.getpid())
        r, w = os.pipe()
        try:
            self.assertEqual(count_fds(os.getpid()), before + 2)
        finally:
            os.close(r)
            os.close(w)

    def test_ns_child(self) -> None:
        with open(f"/proc/{os.getpid()}/status", "rb") as f:
            own = parse_nspid(f.read())[-1]  # our PID in our own namespace
        self.assertEqual(ns_child(os.getppid(), own), os.getpid())
        self.assertIsNone(ns_child(os.getpid(), own))


if __name__ == "__main__":
    unittest.main()
