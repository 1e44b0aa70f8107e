"""Unit tests of the /proc parsers: ``python3 -m unittest discover -s bench``."""

from __future__ import annotations

import os
import unittest

from procstat import (
    children_of,
    parse_kib_fields,
    parse_schedstat_ns,
    parse_status_ctxt,
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


if __name__ == "__main__":
    unittest.main()
