"""The kill log (its JSON encoder, one write per line), the metrics file, the writer thread."""

from __future__ import annotations

import functools
import json
import math
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from bustd import sig
from bustd.background import LIMIT, Background
from bustd.killlog import KillLog, dumps, kill_object
from bustd.log import Log
from bustd.meminfo import MemInfo
from bustd.metrics import Metrics, Snapshot, render
from bustd.outputs import CheckRecord
from bustd.process import Candidate
from bustd.procfs import ProcFS
from bustd.record import KillRecord, Reading, WarnRecord
from tests.fakeproc import FakeProc

# -- the JSON encoder --------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                          allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)


@given(json_values)
def test_dumps_round_trips_through_json_loads(value: Any) -> None:
    text = dumps(value)
    assert "\n" not in text and "\r" not in text  # one line, whatever the strings hold
    assert json.loads(text) == value


@given(st.text())
def test_dumps_strings_are_ascii_safe_on_one_line(text: str) -> None:
    out = dumps(text)
    assert json.loads(out) == text
    assert all(ch >= " " for ch in out)
    out.encode("utf-8")  # lone surrogates are escaped, never written raw


def test_dumps_special_values() -> None:
    assert dumps([math.inf, -math.inf, math.nan, 0.1, True, None]) == (
        "[null,null,null,0.1,true,null]")
    assert dumps({"a": "\u2028\x00\x7f"}) == '{"a":"\\u2028\\u0000\\u007f"}'
    with pytest.raises(TypeError):
        dumps({1: 2})
    with pytest.raises(TypeError):
        dumps(b"bytes")


# -- records -----------------------------------------------------------------

def candidate(pid: int, comm: bytes, size: int = 1000) -> Candidate:
    c = Candidate(pid, 900, size, 1000, pid, comm)
    c.freeable_kib = size
    c.growth_kib, c.growth_s = 512, 8.0
    c.pace_kib_s = 96.04
    c.badness = 1234.5
    return c


def reading() -> Reading:
    return Reading(100_000, 8_000_000, 0, 0, 0, 42.5, 3.0, "some")


def kill_record(comm: bytes = b'"; rm -rf ~', dry: bool = False) -> KillRecord:
    r = KillRecord(1_790_000_000.25, candidate(4242, comm), 1000, 0, b"/usr/bin/\xffx",
                   2048, 512, "growth", "MemAvailable 97.7 MiB (1.2%) <= 781.2 MiB, no swap",
                   sig.SIGTERM, reading(), dry)
    r.cmdline = b"$(touch /tmp/pwned)\0--flag\0"
    r.exited, r.exit_s, r.reaction_s = True, 0.25, 0.004
    r.runners_up = [candidate(4243, b"next\nline", 500)]
    return r


def test_kill_object_has_every_field_with_names_as_the_log_renders_them() -> None:
    obj = json.loads(dumps(kill_object(kill_record())))
    assert obj["name"] == '"; rm -rf ~' and obj["exe"] == "/usr/bin/\\xffx"
    assert obj["cmdline"] == "$(touch /tmp/pwned) --flag"
    assert obj["pid"] == 4242 and obj["uid"] == 1000
    assert obj["rss_kib"] == 2048 and obj["swap_kib"] == 512 and obj["oom_score"] == 900
    assert obj["signal"] == "SIGTERM" and obj["cause"] == "memory"
    assert obj["reason"].startswith("MemAvailable 97.7 MiB")
    assert obj["readings"] == {"mem_available_kib": 100_000, "mem_total_kib": 8_000_000,
                               "swap_free_kib": 0, "swap_total_kib": 0, "zram_ram_kib": 0,
                               "stall_percent": 42.5, "stall_s": 3.0, "psi_metric": "some"}
    assert obj["reaction_ms"] == 4.0 and obj["exit_s"] == 0.25 and obj["exited"] is True
    assert obj["time"] == 1_790_000_000.25 and obj["date"] == "2026-09-21T14:13:20.250Z"
    assert obj["runners_up"] == [{"pid": 4243, "name": "next\\nline", "freeable_kib": 500,
                                  "sized": False,
                                  "growth_kib": 512, "growth_s": 8.0, "pace_kib_s": 96.0,
                                  "oom_score": 900, "score": 1234.5}]
    assert obj["pace_kib_s"] == 96.0
    assert obj["dry_run"] is False


def test_kill_object_cmdline_not_read_is_null() -> None:
    r = kill_record()
    r.cmdline = None
    assert kill_object(r)["cmdline"] is None


class LogLines:
    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "bustd.log"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.log = Log(False, self.fd)

    def text(self) -> str:
        return self.path.read_text()


def test_kill_log_appends_one_line_per_kill_and_ignores_other_records(tmp_path: Path) -> None:
    out = LogLines(tmp_path)
    path = tmp_path / "kills.jsonl"
    path.write_text('{"earlier": true}\n')
    writer = Background()
    klog = KillLog(str(path), writer, out.log)
    klog(kill_record())
    klog(WarnRecord(1.0, "memory", "x", reading(), None))
    klog(kill_record(b"second", dry=True))
    assert writer.drain(5)
    lines = path.read_text().splitlines()
    assert lines[0] == '{"earlier": true}'
    assert [json.loads(x)["name"] for x in lines[1:]] == ['"; rm -rf ~', "second"]
    assert json.loads(lines[2])["dry_run"] is True
    assert out.text() == ""


def test_kill_log_write_cut_short_never_swallows_the_next_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = LogLines(tmp_path)
    path = tmp_path / "kills.jsonl"
    klog = KillLog(str(path), Background(), out.log)
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(
        fd, data if fd == out.fd else data[:10]))
    klog.append(b'{"first": 1}\n')
    monkeypatch.setattr(os, "write", real_write)
    klog.append(b'{"second": 2}\n')
    assert path.read_text().split("\n") == ['{"first": ', '{"second": 2}', ""]
    assert "only 10 of 13 bytes written" in out.text()


def test_kill_log_refuses_a_symbolic_link_and_says_so_once(tmp_path: Path) -> None:
    out = LogLines(tmp_path)
    target = tmp_path / "target"
    target.write_text("")
    (tmp_path / "kills.jsonl").symlink_to(target)
    klog = KillLog(str(tmp_path / "kills.jsonl"), Background(), out.log)
    klog.append(b"{}\n")
    klog.append(b"{}\n")
    assert target.read_text() == ""
    assert out.text().count("cannot write kill log") == 1


def test_background_runs_jobs_in_order_and_drops_beyond_the_limit() -> None:
    writer = Background()
    gate = threading.Lock()
    gate.acquire()
    done: list[int] = []

    def held() -> None:
        with gate:
            pass

    assert writer.submit(held)
    for i in range(LIMIT):
        writer.submit(functools.partial(done.append, i))
    assert writer.busy()
    assert writer.submit(lambda: done.append(-1)) is False and writer.dropped >= 1
    assert not writer.drain(0.05)  # held by the first job
    gate.release()
    assert writer.drain(5) and not writer.busy()
    assert done == sorted(done) and -1 not in done and len(done) >= LIMIT - 1


def test_background_survives_a_job_that_raises() -> None:
    writer = Background()
    done: list[str] = []

    def boom() -> None:
        raise ValueError("x")

    writer.submit(boom)
    writer.submit(lambda: done.append("after"))
    assert writer.drain(5) and done == ["after"]


# -- metrics -----------------------------------------------------------------

def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def check(now: float = 100.0, stall: float | None = 12.5) -> CheckRecord:
    return CheckRecord(now, MemInfo(8 << 20, 1 << 20, 2 << 20, 1 << 19), stall, True, 0.0125, 3, 1)


def test_render_parses_with_prometheus_client_and_says_everything() -> None:
    snap = Snapshot(check(), {("SIGTERM", "memory"): 2, ("SIGKILL", "pressure"): 1},
                    {"memory": 4}, {"pressure": 5}, 1_790_000_000.5,
                    {"some": 2_500_000, "full": 1_000_000}, 0.25, 17,
                    {"notification": 2})
    got = samples(render(snap))
    assert got[("bustd_kills_total", (("reason", "memory"), ("signal", "SIGTERM")))] == 2
    assert got[("bustd_kills_total", (("reason", "pressure"), ("signal", "SIGKILL")))] == 1
    assert got[("bustd_kills_total", (("reason", "pressure"), ("signal", "SIGTERM")))] == 0
    assert got[("bustd_dry_run_kills_total", (("reason", "memory"),))] == 4
    assert got[("bustd_warnings_total", (("reason", "pressure"),))] == 5
    assert got[("bustd_warnings_total", (("reason", "memory"),))] == 0
    assert got[("bustd_last_kill_timestamp_seconds", ())] == 1_790_000_000.5
    assert got[("bustd_memory_available_bytes", ())] == (1 << 20) * 1024
    assert got[("bustd_memory_total_bytes", ())] == (8 << 20) * 1024
    assert got[("bustd_swap_free_bytes", ())] == (1 << 19) * 1024
    assert got[("bustd_swap_total_bytes", ())] == (2 << 20) * 1024
    assert got[("bustd_pressure_memory_stalled_seconds_total", (("kind", "some"),))] == 2.5
    assert got[("bustd_pressure_memory_stalled_seconds_total", (("kind", "full"),))] == 1.0
    assert got[("bustd_stall_ratio", ())] == 0.25
    assert got[("bustd_decision_stall_ratio", ())] == 0.125
    assert got[("bustd_scan_duration_seconds", ())] == 0.0125
    assert got[("bustd_watching", ())] == 1 and got[("bustd_dying_victims", ())] == 1
    assert got[("bustd_checks_total", ())] == 17
    assert got[("bustd_child_failures_total", (("kind", "notification"),))] == 2
    assert got[("bustd_child_failures_total", (("kind", "pre-kill hook"),))] == 0


def test_render_without_psi_or_children_leaves_those_series_out() -> None:
    text = render(Snapshot(check(stall=None), {}, {}, {}, 0.0, None, None, 1, None))
    names = {name for name, _ in samples(text)}
    assert "bustd_pressure_memory_stalled_seconds_total" not in names
    assert "bustd_stall_ratio" not in names and "bustd_decision_stall_ratio" not in names
    assert "bustd_child_failures_total" not in names
    assert "bustd_kills_total" in names and "bustd_last_kill_timestamp_seconds" in names


def test_metrics_counts_records_and_writes_at_most_every_interval(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path / "proc")
    fake.set_pressure(some_total=1_000_000, full_total=0)
    out = LogLines(tmp_path)
    path = tmp_path / "out" / "bustd.prom"
    path.parent.mkdir()
    writer = Background()
    m = Metrics(str(path), writer, out.log, ProcFS(fake.root), "some", interval=5.0)
    m(check(100.0))
    assert writer.drain(5)
    first = samples(path.read_text())
    assert first[("bustd_checks_total", ())] == 1
    assert ("bustd_stall_ratio", ()) not in first  # one PSI reading: no rate yet
    m(kill_record())
    m(kill_record(dry=True))
    m(WarnRecord(1.0, "pressure", "x", reading(), None))
    fake.set_pressure(some_total=2_000_000, full_total=0)
    m(check(103.0))  # before the interval: not written
    assert writer.drain(5)
    assert samples(path.read_text())[("bustd_checks_total", ())] == 1
    m(check(105.0))
    assert writer.drain(5)
    got = samples(path.read_text())
    assert got[("bustd_checks_total", ())] == 3
    assert got[("bustd_kills_total", (("reason", "memory"), ("signal", "SIGTERM")))] == 1
    assert got[("bustd_dry_run_kills_total", (("reason", "memory"),))] == 1
    assert got[("bustd_warnings_total", (("reason", "pressure"),))] == 1
    assert got[("bustd_last_kill_timestamp_seconds", ())] == 1_790_000_000.25
    assert got[("bustd_stall_ratio", ())] == 0.2  # 1 s stalled over 5 s
    assert sorted(p.name for p in path.parent.iterdir()) == ["bustd.prom"]  # no temporary
    assert out.text() == ""


def test_metrics_file_that_cannot_be_written_is_said_once(tmp_path: Path) -> None:
    out = LogLines(tmp_path)
    m = Metrics(str(tmp_path / "gone" / "bustd.prom"), Background(), out.log,
                ProcFS(str(tmp_path)), "some", interval=0.0)
    m.replace(b"x")
    m.replace(b"x")
    assert out.text().count("cannot write metrics file") == 1


def test_metrics_file_is_readable_by_node_exporter_whatever_the_umask(tmp_path: Path) -> None:
    out = LogLines(tmp_path)
    m = Metrics(str(tmp_path / "bustd.prom"), Background(), out.log, ProcFS(str(tmp_path)),
                "some")
    old = os.umask(0o077)
    try:
        m.replace(b"x 1\n")
    finally:
        os.umask(old)
    assert (tmp_path / "bustd.prom").stat().st_mode & 0o777 == 0o644


def test_render_says_what_the_kills_freed_and_what_holds_memory_outside_processes() -> None:
    from bustd.held import Held
    held = Held(8 << 20, 1 << 20, 1 << 20, 5 << 20, 0, 1 << 18,
                [("/dev/shm", 5 << 20), ('/tmp/a "b"\\c', 2048)])
    text = render(Snapshot(check(), {}, {}, {}, 0.0, None, None, 1, None, vain=2,
                           freed_kib=300 << 10, held=held))
    got = samples(text)
    assert got[("bustd_kills_in_vain_total", ())] == 2
    assert got[("bustd_freed_bytes_total", ())] == (300 << 10) * 1024
    outside = "bustd_memory_outside_processes_bytes"
    assert got[(outside, (("kind", "shmem"),))] == (5 << 20) * 1024
    assert got[(outside, (("kind", "slab_unreclaimable"),))] == (1 << 18) * 1024
    assert got[(outside, (("kind", "other"),))] == ((1 << 20) - (1 << 18)) * 1024
    assert got[("bustd_tmpfs_used_bytes", (("mount", "/dev/shm"),))] == (5 << 20) * 1024
    assert got[("bustd_tmpfs_used_bytes", (("mount", '/tmp/a "b"\\c'),))] == 2048 * 1024


def test_kill_object_says_what_was_expected_and_freed() -> None:
    r = kill_record()
    r.expected_kib, r.freed_kib, r.freed_s, r.vain, r.backoff_s = 4096, 10, 1.02, True, 5.0
    obj = kill_object(r)
    assert (obj["expected_kib"], obj["freed_kib"], obj["freed_s"], obj["in_vain"],
            obj["backoff_s"], obj["held_outside"]) == (4096, 10, 1.02, True, 5.0, None)
    assert json.loads(dumps(obj))["in_vain"] is True
