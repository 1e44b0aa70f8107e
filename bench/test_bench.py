"""Unit tests of the report's pure parts: ``python3 -m unittest discover -s bench``."""

from __future__ import annotations

import math
import unittest

from bench import latency_summary, parse_reaction

KILL = ("bustd: kill: pid=7 name=sleep uid=0 rss=1.0 MiB oom_score=1666 oom_score_adj=1000 "
        "signal=SIGTERM exited after 0.00 s; reaction={} ms after {} wakeup; reason: low")


class ReactionTest(unittest.TestCase):
    """bustd's reaction time, read from its kill line."""

    def test_psi_and_timer(self) -> None:
        self.assertEqual(parse_reaction([KILL.format(12, "PSI trigger")]), (12, "PSI trigger"))
        self.assertEqual(parse_reaction(["watching", KILL.format(0, "timer")]), (0, "timer"))

    def test_absent_or_garbage(self) -> None:
        self.assertIsNone(parse_reaction([]))
        self.assertIsNone(parse_reaction(["dry run: would kill pid=7 name=sleep"]))
        self.assertIsNone(parse_reaction([KILL.format("x", "timer")]))
        self.assertIsNone(parse_reaction([KILL.format(3, "signal")]))

    def test_summary(self) -> None:
        runs = [{"marks_s": {"started": 0.03, "log": 0.04, "death": 0.04},
                 "log": [KILL.format(ms, by)]}
                for ms, by in ((1, "timer"), (3, "timer"), (2, "PSI trigger"))]
        s = latency_summary({"runs": runs})
        self.assertAlmostEqual(s["reaction"], 0.002)
        self.assertEqual((s["reaction_n"], s["timer_n"], s["runs"]), (3.0, 2.0, 3.0))
        dry = latency_summary({"runs": [{"marks_s": {}, "log": ["dry run: would kill"]}]})
        self.assertTrue(math.isnan(dry["reaction"]))
        self.assertEqual(dry["reaction_n"], 0.0)


if __name__ == "__main__":
    unittest.main()
