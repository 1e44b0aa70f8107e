"""Per-second stall profile of one e2e run: what the fine samples say.

Usage (through the tests/e2e/profile wrapper):

  tests/e2e/profile RESULT.json [--sizes]

Prints, for each second after the hogs started: the PSI memory `some` and
`full` stall over that second (percent of the second, from the `total=`
counters), swap-in and swap-out in MiB/s (/proc/vmstat pswpin/pswpout),
anonymous and file refaults in MiB/s (workingset_refault_anon, _file), the
anonymous refaults the kernel counted as working set (workingset_activate_anon,
workingset_restore_anon: "act" and "restore", MiB/s), MemAvailable,
SwapFree, zram's real RAM use (mem_used_total) and its compression ratio
(orig_data_size / compr_data_size), and the run's events (a process exiting
or reaching its size, memory running short). Then the summary: the longest
runs of consecutive seconds with `some` >= 10, 25 and 50 %, the worst mean
`some` over any 3, 5 and 10 s window, the mean stall, the swap-in during
stalled seconds and in total, and the rates of the thrashing signals (swap-in,
swap-in over swap-out, activate, restore) over the stalled seconds (issue 14
chooses the thrashing rule from them). With --sizes, each process's RSS + swap once a
second as well.

Exit codes: 0 printed, 2 the file is missing, not JSON or has no samples.
The pure parts (per_second, longest_run, summarize) are tested in
test_harness.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any, Callable

__all__ = [
    "Second",
    "rows_of",
    "per_second",
    "longest_run",
    "worst_window",
    "summarize",
    "events",
    "render",
    "main",
]

PAGE = 4096
MIB = 1 << 20
STALL_LEVELS = (10, 25, 50)  # percent of a second, for the longest-run figures
# Swap-in that tells thrashing (pages needed again) from growth that only
# swaps out; the longest run of `some` >= 25 % with at least this swap-in.
THRASH_SWAPIN_MIB_S = 1.0
WINDOWS = (3, 5, 10)  # seconds, for the worst-window mean


@dataclass(frozen=True)
class Second:
    """What happened in one second [t, t + 1) of a run.

    Rates are over the samples that bound the second; levels (MemAvailable,
    SwapFree, zram) are those at its end. None where the run did not record
    the counter (no zram, an old kernel without workingset_refault_*, a run
    from before file refaults were sampled).
    """

    t: int
    some_pct: float
    full_pct: float
    swapin_mib_s: float
    swapout_mib_s: float
    refault_mib_s: float | None
    avail_mib: float
    file_refault_mib_s: float | None
    swap_free_mib: float
    zram_used_mib: float | None
    zram_ratio: float | None
    activate_mib_s: float | None = None
    restore_mib_s: float | None = None


def rows_of(block: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Return a {"columns", "rows"} table of result.json as a list of dicts.

    Returns [] for None or a table without rows. Raises ValueError if a row's
    length differs from the columns'.
    """
    if not block:
        return []
    cols: list[str] = block.get("columns", [])
    out = []
    for i, row in enumerate(block.get("rows", [])):
        if len(row) != len(cols):
            raise ValueError(f"samples row {i} has {len(row)} values for {len(cols)} columns")
        out.append(dict(zip(cols, row)))
    return out


def _delta(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    """b[key] - a[key], None if either is missing."""
    if a.get(key) is None or b.get(key) is None:
        return None
    return float(b[key] - a[key])


def _zram(sample: dict[str, Any], field: str) -> float | None:
    """Sum of one mm_stat field over every zram device in a sample, or None."""
    values = [v for k, v in sample.items() if k.endswith("." + field) and v is not None]
    return float(sum(values)) if values else None


def per_second(samples: list[dict[str, Any]]) -> list[Second]:
    """Return one Second for each whole second the samples span.

    Second t is bounded by the first sample at or after t and the first at or
    after t + 1; a second without both bounds (the end of the run, or a gap in
    the samples longer than a second) is left out. Counter deltas are divided
    by the real time between those samples.
    """
    if not samples:
        return []
    out: list[Second] = []
    last_t = samples[-1]["t"]
    idx = 0
    t = max(0, int(samples[0]["t"]))
    while t + 1 <= last_t:
        while idx < len(samples) and samples[idx]["t"] < t:
            idx += 1
        end = idx
        while end < len(samples) and samples[end]["t"] < t + 1:
            end += 1
        if idx >= len(samples) or end >= len(samples) or samples[idx]["t"] >= t + 1:
            t += 1
            continue
        a, b = samples[idx], samples[end]
        dt = b["t"] - a["t"]
        if dt <= 0 or dt > 2.0:
            t += 1
            continue

        def rate(key: str, scale: float, a: dict[str, Any] = a, b: dict[str, Any] = b,
                 dt: float = dt) -> float | None:
            d = _delta(a, b, key)
            return None if d is None else d * scale / dt

        some = rate("some_us", 100 / 1e6) or 0.0
        full = rate("full_us", 100 / 1e6) or 0.0
        orig, compr = _zram(b, "orig_data_size"), _zram(b, "compr_data_size")
        used = _zram(b, "mem_used_total")
        out.append(
            Second(
                t=t,
                some_pct=min(100.0, max(0.0, some)),
                full_pct=min(100.0, max(0.0, full)),
                swapin_mib_s=rate("pswpin", PAGE / MIB) or 0.0,
                swapout_mib_s=rate("pswpout", PAGE / MIB) or 0.0,
                refault_mib_s=rate("workingset_refault_anon", PAGE / MIB),
                avail_mib=(b.get("mem_available_kib") or 0) / 1024,
                file_refault_mib_s=rate("workingset_refault_file", PAGE / MIB),
                swap_free_mib=(b.get("swap_free_kib") or 0) / 1024,
                zram_used_mib=None if used is None else used / MIB,
                # below 1 MiB stored the ratio is zram's bookkeeping, not data
                zram_ratio=orig / compr if orig is not None and compr and orig >= MIB else None,
                activate_mib_s=rate("workingset_activate_anon", PAGE / MIB),
                restore_mib_s=rate("workingset_restore_anon", PAGE / MIB),
            )
        )
        t += 1
    return out


def longest_run(
    seconds: list[Second], level: float, full: bool = False, min_swapin: float = 0.0
) -> tuple[int, int | None]:
    """Return (length, first second) of the longest run of consecutive seconds
    whose stall (`some`, or `full` with full=True) is at least level percent
    and whose swap-in is at least min_swapin MiB/s.

    (0, None) when no second reaches it. Seconds missing from the list break a
    run.
    """
    best, best_start = 0, None
    length, start, prev = 0, 0, None
    for s in seconds:
        value = s.full_pct if full else s.some_pct
        if value >= level and s.swapin_mib_s >= min_swapin:
            if length and prev is not None and s.t == prev + 1:
                length += 1
            else:
                length, start = 1, s.t
            if length > best:
                best, best_start = length, start
        else:
            length = 0
        prev = s.t
    return best, best_start


def worst_window(seconds: list[Second], width: int) -> tuple[float, int | None]:
    """Return (mean `some` %, first second) of the worst window of `width`
    consecutive seconds; (0.0, None) if the run is shorter than the window.
    """
    best, best_start = 0.0, None
    for i in range(len(seconds) - width + 1):
        window = seconds[i : i + width]
        if window[-1].t - window[0].t != width - 1:
            continue  # a gap: not consecutive
        mean = sum(s.some_pct for s in window) / width
        if best_start is None or mean > best:
            best, best_start = mean, window[0].t
    return best, best_start


def summarize(seconds: list[Second]) -> dict[str, Any]:
    """Return the summary figures of a run's seconds (see the module docstring).

    Keys: seconds, longest_some_<L> and longest_full_<L> as [length, start]
    for each STALL_LEVELS L, worst_some_<W>s as [mean, start] for each
    WINDOWS W, mean_some_pct, mean_full_pct, swapin_total_mib,
    swapout_total_mib, peak_swapin_mib_s, first_some_10 and last_some_10
    (the first and last second with `some` >= 10 %, None if none),
    longest_some_25_swapin as [length, start] (`some` >= 25 % with swap-in
    >= THRASH_SWAPIN_MIB_S), and for the seconds with `some` >= 25 %:
    stalled_25_seconds, their mean swap-in and refault MiB/s.
    """
    n = len(seconds)
    out: dict[str, Any] = {"seconds": n}
    for level in STALL_LEVELS:
        out[f"longest_some_{level}"] = list(longest_run(seconds, level))
        out[f"longest_full_{level}"] = list(longest_run(seconds, level, full=True))
    for width in WINDOWS:
        mean, start = worst_window(seconds, width)
        out[f"worst_some_{width}s"] = [round(mean, 1), start]
    out["mean_some_pct"] = round(sum(s.some_pct for s in seconds) / n, 1) if n else 0.0
    out["mean_full_pct"] = round(sum(s.full_pct for s in seconds) / n, 1) if n else 0.0
    out["swapin_total_mib"] = round(sum(s.swapin_mib_s for s in seconds), 1)
    out["swapout_total_mib"] = round(sum(s.swapout_mib_s for s in seconds), 1)
    out["peak_swapin_mib_s"] = round(max((s.swapin_mib_s for s in seconds), default=0.0), 1)
    stalled_10 = [s.t for s in seconds if s.some_pct >= 10]
    out["first_some_10"] = stalled_10[0] if stalled_10 else None
    out["last_some_10"] = stalled_10[-1] if stalled_10 else None
    out["longest_some_25_swapin"] = list(
        longest_run(seconds, 25, min_swapin=THRASH_SWAPIN_MIB_S)
    )
    stalled = [s for s in seconds if s.some_pct >= 25]
    out["stalled_25_seconds"] = len(stalled)
    out["stalled_25_swapin_mib_s"] = (
        round(sum(s.swapin_mib_s for s in stalled) / len(stalled), 1) if stalled else None
    )
    refaults = [s.refault_mib_s for s in stalled if s.refault_mib_s is not None]
    out["stalled_25_refault_mib_s"] = (
        round(sum(refaults) / len(refaults), 1) if refaults else None
    )
    out["stalled_25_signals"] = signals(stalled)
    # The seconds the rule before issue 14 took for thrashing (stall and
    # swap-in): what tells thrashing from growth among them.
    out["stalled_swapin_signals"] = signals(
        [s for s in stalled if s.swapin_mib_s >= THRASH_SWAPIN_MIB_S])
    return out


def _in_out(s: Second) -> float | None:
    """Swap-in over swap-out in one second (None when nothing went out)."""
    return s.swapin_mib_s / s.swapout_mib_s if s.swapout_mib_s > 0 else None


def _swapin(s: Second) -> float | None:
    return s.swapin_mib_s


def _activate(s: Second) -> float | None:
    return s.activate_mib_s


def _restore(s: Second) -> float | None:
    return s.restore_mib_s


# The thrashing signals compared by issue 14: name -> its value in one second.
SIGNALS: dict[str, Callable[[Second], float | None]] = {
    "swapin": _swapin, "in/out": _in_out, "activate": _activate, "restore": _restore}


def signals(seconds: list[Second]) -> dict[str, list[float] | None]:
    """Return {signal: [min, median, max]} of each of SIGNALS over ``seconds``.

    None for a signal no second has (an old run, nothing swapped out).
    """
    out: dict[str, list[float] | None] = {}
    for name, value in SIGNALS.items():
        vals = sorted(v for v in (value(s) for s in seconds) if v is not None)
        out[name] = ([round(vals[0], 2), round(vals[len(vals) // 2], 2), round(vals[-1], 2)]
                     if vals else None)
    return out


def events(result: dict[str, Any]) -> list[tuple[float, str]]:
    """Return the run's events as (seconds after the hogs started, text), in time order."""
    out: list[tuple[float, str]] = []
    for p in result.get("processes") or []:
        if p.get("t_done_s") is not None:
            out.append((p["t_done_s"], f"{p['name']} reached {p.get('mib', '?')} MiB"))
        if p.get("t_exit_s") is not None:
            how = f"signal {p['signal']}" if p.get("signal") else f"exit {p.get('exit_code')}"
            out.append((p["t_exit_s"], f"{p['name']} died ({how})"))
    low = result.get("at_low_memory")
    if low:
        out.append((low["t"], f"memory short, largest {low.get('largest')}"))
    return sorted(out, key=lambda e: e[0])


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render(result: dict[str, Any], with_sizes: bool = False) -> str:
    """Return the per-second table and the summary of one result as text.

    Raises ValueError if the result has no fine samples.
    """
    samples = rows_of(result.get("samples"))
    if not samples:
        raise ValueError("result has no fine samples (a run from before tests/e2e/profile.py)")
    seconds = per_second(samples)
    evs = events(result)
    sizes = rows_of(result.get("sizes"))
    names = [c[: -len(".rss_kib")] for c in (result.get("sizes") or {}).get("columns", [])
             if c.endswith(".rss_kib")]
    head = (
        f"scenario {result.get('scenario')} daemon {result.get('daemon')} "
        f"kernel {result.get('kernel')}: MemTotal {result.get('mem_total_kib', 0) // 1024} MiB, "
        f"MemAvailable before {result.get('mem_available_before_hogs_kib', 0) // 1024} MiB, "
        f"swap {result.get('swap_total_kib', 0) // 1024} MiB"
    )
    cols = ["t", "some%", "full%", "in MiB/s", "out MiB/s", "refault", "frefault", "act",
            "restore", "avail", "swapfree", "zram MiB", "ratio"]
    if with_sizes:
        cols += names
    lines = [head, "", "  ".join(f"{c:>9}" for c in cols) + "  events"]
    for s in seconds:
        cells = [
            str(s.t),
            f"{s.some_pct:.1f}",
            f"{s.full_pct:.1f}",
            f"{s.swapin_mib_s:.1f}",
            f"{s.swapout_mib_s:.1f}",
            _num(s.refault_mib_s, ".1f"),
            _num(s.file_refault_mib_s, ".1f"),
            _num(s.activate_mib_s, ".1f"),
            _num(s.restore_mib_s, ".1f"),
            f"{s.avail_mib:.0f}",
            f"{s.swap_free_mib:.0f}",
            _num(s.zram_used_mib, ".0f"),
            _num(s.zram_ratio, ".2f"),
        ]
        if with_sizes:
            row = next((r for r in sizes if r["t"] >= s.t + 1), sizes[-1] if sizes else {})
            for name in names:
                rss, swap = row.get(f"{name}.rss_kib"), row.get(f"{name}.swap_kib")
                cells.append("-" if rss is None else f"{(rss + (swap or 0)) / 1024:.0f}")
        what = [text for t, text in evs if s.t <= t < s.t + 1]
        lines.append("  ".join(f"{c:>9}" for c in cells) + ("  " + "; ".join(what) if what else ""))
    summary = summarize(seconds)
    lines += ["", "summary:"]
    for level in STALL_LEVELS:
        n, start = summary[f"longest_some_{level}"]
        nf, startf = summary[f"longest_full_{level}"]
        lines.append(
            f"  longest run of some >= {level}%: {n} s" + (f" from {start} s" if n else "")
            + f"; of full >= {level}%: {nf} s" + (f" from {startf} s" if nf else "")
        )
    for width in WINDOWS:
        mean, start = summary[f"worst_some_{width}s"]
        lines.append(f"  worst {width} s window of some: {mean:.1f}% mean from {start} s")
    lines.append(
        f"  mean stall: some {summary['mean_some_pct']}%, full {summary['mean_full_pct']}% "
        f"over {summary['seconds']} s"
    )
    lines.append(
        f"  swap-in total {summary['swapin_total_mib']} MiB (peak "
        f"{summary['peak_swapin_mib_s']} MiB/s), swap-out total {summary['swapout_total_mib']} MiB"
    )
    lines.append(
        f"  seconds with some >= 25%: {summary['stalled_25_seconds']}, mean swap-in "
        f"{_num(summary['stalled_25_swapin_mib_s'], '')} MiB/s, mean refault "
        f"{_num(summary['stalled_25_refault_mib_s'], '')} MiB/s"
    )
    lines.append("  signals over the seconds with some >= 25% (min / median / max): " + "; ".join(
        f"{name} " + ("-" if v is None else " / ".join(f"{x:g}" for x in v))
        for name, v in summary["stalled_25_signals"].items()))
    lines.append(
        f"  the same over the seconds with some >= 25% and swap-in >= {THRASH_SWAPIN_MIB_S:g} "
        "MiB/s: " + "; ".join(
            f"{name} " + ("-" if v is None else " / ".join(f"{x:g}" for x in v))
            for name, v in summary["stalled_swapin_signals"].items()))
    n, start = summary["longest_some_25_swapin"]
    lines.append(
        f"  longest run of some >= 25% with swap-in >= {THRASH_SWAPIN_MIB_S:g} MiB/s: {n} s"
        + (f" from {start} s" if n else "")
    )
    lines.append(
        f"  first and last second with some >= 10%: {_num(summary['first_some_10'], '')}, "
        f"{_num(summary['last_some_10'], '')}"
    )
    lines.append("  events: " + "; ".join(f"{t:.2f} s {text}" for t, text in evs))
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Print the profile of one result.json; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="tests/e2e/profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("result", help="a result.json of tests/e2e/run")
    parser.add_argument("--sizes", action="store_true", help="add each process's RSS + swap")
    args = parser.parse_args(argv)
    try:
        with open(args.result) as f:
            result = json.load(f)
        if not isinstance(result, dict):
            raise ValueError("not a JSON object")
        text = render(result, args.sizes)
    except (OSError, ValueError) as err:
        print(f"profile: {args.result}: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
