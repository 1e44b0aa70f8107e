"""Side-by-side report: the e2e scenarios with no daemon, earlyoom, nohang, bustd.

Usage (through the tests/e2e/report wrapper):

  tests/e2e/report                      run everything, write docs/e2e-report.md
  tests/e2e/report --scenarios 1,3 --daemons earlyoom,bustd
  tests/e2e/report --from-results       rebuild the table from the last runs

Each (scenario, daemon) pair boots its own VM, exactly as tests/e2e/run does.
Exit code 0 when the report was written (whatever it says), 2 on bad arguments
or a missing prerequisite.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from tests.e2e import daemons, runner, scenarios, verdict

__all__ = ["render", "main"]

DEFAULT_DAEMONS = ("none", "earlyoom", "nohang", "bustd")
# Issue 4: "the signal is sent within 200 ms of a PSI trigger event".
REACTION_TARGET_MS = 200


def cell_time(s: verdict.Summary) -> str:
    """Time from the hogs' start to the daemon's first kill, or a dash."""
    return "-" if s.time_to_kill_s is None else f"{s.time_to_kill_s:.1f} s"


def row(o: runner.Outcome) -> str:
    """Return one Markdown table row for an outcome."""
    verdict_cell = "**FAIL**" if o.failed else "PASS"
    why = "; ".join(o.failed) if o.failed else ""
    if o.result is None or "processes" not in o.result:
        cells = ["-"] * 8
    else:
        s = verdict.summarize(o.result)
        killed = f"{s.hogs_killed_by_daemon} / {s.hogs_killed_by_kernel} / {s.killed_total}"
        cells = [
            cell_time(s),
            runner.reaction_text(s),
            killed,
            "-" if s.psi_full_ms is None else f"{s.psi_full_ms / 1000:.1f} s",
            f"{o.result.get('max_swap_used_kib', 0) // 1024} MiB",
            f"{s.daemon_rss_kib / 1024:.1f} MiB" if s.daemon_rss_kib else "-",
            "-" if s.probe_worst_ms is None else f"{s.probe_worst_ms:.0f} ms",
            f"{o.result.get('run_s', 0):.0f} s",
        ]
    return "| " + " | ".join([f"{o.scenario.id}", o.daemon, verdict_cell, *cells, why]) + " |"


def reaction_note(outcomes: list[runner.Outcome]) -> list[str]:
    """Return the paragraph on issue 4's reaction target: reported, not checked."""
    seen = [
        (o.scenario.id, ms, wakeup)
        for o in outcomes
        if o.result is not None and "processes" in o.result
        for ms, wakeup in verdict.summarize(o.result).reactions
    ]
    if not seen:
        return []
    psi = [f"{sid} ({ms} ms)" for sid, ms, wakeup in seen if wakeup == "PSI trigger"]
    timer = [f"{sid} ({ms} ms)" for sid, ms, wakeup in seen if wakeup == "timer"]
    over = [f"{sid} ({ms} ms)" for sid, ms, wakeup in seen if ms > REACTION_TARGET_MS]
    text = (
        f"Reaction target (issue 4): the signal within {REACTION_TARGET_MS} ms of a PSI "
        "trigger event; reported here, not a check of the scenarios. "
    )
    if psi:
        text += "Kills woken by a PSI trigger, by scenario: " + ", ".join(psi) + ". "
    if timer:
        text += (
            "Kills woken by bustd's timer (the threshold was found by a timed check, "
            "not a trigger event; the figure runs from that wakeup): " + ", ".join(timer) + ". "
        )
    text += (
        f"Over {REACTION_TARGET_MS} ms: " + ", ".join(over) + "."
        if over
        else f"Every kill was signalled within {REACTION_TARGET_MS} ms of its wakeup."
    )
    return [text, ""]


def zram_note(outcomes: list[runner.Outcome]) -> list[str]:
    """Return the caveat on bustd in the zram scenarios, with the runs' figures."""
    facts = []
    for o in outcomes:
        if o.daemon != "bustd" or not o.scenario.zram_mib or o.result is None:
            continue
        if "processes" not in o.result:
            continue
        s = verdict.summarize(o.result)
        used = o.result.get("max_swap_used_kib", 0) // 1024
        total = o.result.get("swap_total_kib", 0) // 1024
        facts.append(
            f"scenario {o.scenario.id}: first kill after {cell_time(s)}, "
            f"at most {used} of {total} MiB of zram in use"
        )
    if not facts:
        return []
    return [
        "In the zram scenarios bustd acts on PSI during the hog's build-up, before zram "
        "is much used: its kill lines give a memory stall (PSI `some` at its threshold) "
        "with little MemAvailable as the reason. earlyoom and nohang act on free memory "
        "and free swap, so they act later, once zram is nearly full, or never (compare "
        "the Swap used column). bustd's rows there show it acting early, not how it "
        "would behave once zram carries most of the load (" + "; ".join(facts) + ").",
        "",
    ]


def run_dates(outcomes: list[runner.Outcome]) -> str:
    """Return when each daemon's saved runs were made (result.json times, UTC)."""
    spans: dict[str, list[float]] = {}
    for o in outcomes:
        try:
            mtime = os.path.getmtime(os.path.join(o.out_dir, "result.json"))
        except OSError:
            continue
        spans.setdefault(o.daemon, []).append(mtime)

    def stamp(t: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))

    parts = [f"{name} {stamp(min(ts))} to {stamp(max(ts))}" for name, ts in spans.items()]
    return "; ".join(parts) or "no saved runs found"


def render(outcomes: list[runner.Outcome], command: str, env: str) -> str:
    """Return the whole Markdown report."""
    ids = sorted({o.scenario.id for o in outcomes})
    lines = [
        "# End-to-end report: OOM daemons in a 1 GiB VM",
        "",
        "Generated by `tests/e2e/report`; do not edit by hand. Reproduce with:",
        "",
        "```",
        command,
        "```",
        "",
        env,
        "",
        "## Scenarios",
        "",
    ]
    for sid in ids:
        scen = scenarios.SCENARIOS[sid]
        swap = f"zram swap {scen.zram_mib} MiB" if scen.zram_mib else "no swap"
        lines.append(
            f"{sid}. **{scen.name}** ({swap}, timeout {scen.timeout_s:.0f} s): {scen.notes}"
        )
    lines += [
        "",
        "Every scenario also runs a 48 MiB bystander and an interactive probe that must",
        "survive. A run passes when the daemon (not the kernel OOM killer) killed the hog,",
        "every bystander, protected process and the probe survived, the daemon still ran",
        "at the end, and no more processes died than the scenario needs.",
        "",
        "## Results",
        "",
        "Columns: time from the hogs' start to the daemon's first kill; bustd's reaction as",
        "its kill line gives it (from the wakeup of the check that killed, by a PSI trigger",
        "event or by its timer, to the signal; other daemons log no such figure); hogs",
        "killed by the daemon / hogs killed by the kernel OOM killer / all processes killed;",
        "PSI memory `full` stall accumulated during the run (`/proc/pressure/memory`, delta",
        "of `total=`); the most zram swap in use; the daemon's peak VmRSS; the worst time to",
        "start `/bin/true` in the probe (one start every 50 ms); the run's length (the",
        "hogs' start to the end).",
        "",
        "| Scenario | Daemon | Verdict | Time to kill | bustd reaction | Killed d / k / all "
        "| PSI full | Swap used | Daemon RSS | Probe worst | Run | Failed checks |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [row(o) for o in outcomes]
    lines += ["", *reaction_note(outcomes), *zram_note(outcomes)]
    lines += ["Daemon commands (guest, from the repository root):", ""]
    for name in sorted({o.daemon for o in outcomes}):
        argv = daemons.DAEMONS[name].argv
        lines.append(f"- {name}: `{shlex.join(argv)}`" if argv else f"- {name}: no daemon")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Run the matrix (or load it) and write the report; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="tests/e2e/report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scenarios", default="all", help='"all" or ids like 1,3')
    parser.add_argument("--daemons", default=",".join(DEFAULT_DAEMONS))
    parser.add_argument("--out", default=os.path.join(runner.HARNESS_ROOT, "docs", "e2e-report.md"))
    parser.add_argument(
        "--from-results", action="store_true", help="do not boot: use the last runs' files"
    )
    runner.add_vm_arguments(parser)
    args = parser.parse_args(argv)
    try:
        ids = scenarios.parse_ids(args.scenarios)
    except ValueError as err:
        print(f"e2e: {err}", file=sys.stderr)
        return 2
    names = [d.strip() for d in args.daemons.split(",") if d.strip()]
    unknown = [d for d in names if d not in daemons.DAEMONS]
    if unknown:
        print(f"e2e: unknown daemon(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    args.repo = os.path.abspath(args.repo)
    cfg = None
    if not args.from_results:
        cfg = runner.vm_config(args, names)
        if cfg is None:
            return 2
    outcomes = []
    t0 = time.monotonic()
    for sid in ids:
        for name in names:
            scen = scenarios.SCENARIOS[sid]
            if cfg is None:
                outcome = runner.load_outcome(scen, name, args.results)
            else:
                outcome = runner.run_scenario(scen, name, cfg, args.repo, args.results)
            print(runner.describe(outcome), flush=True)
            outcomes.append(outcome)
    command = f"tests/e2e/install-prereqs && tests/e2e/report --scenarios {args.scenarios}"
    command += f" --daemons {','.join(names)}"
    kernels = {str(o.result.get("kernel")) for o in outcomes if o.result}
    kernel = cfg.kernel if cfg else ", ".join(sorted(kernels)) or "unknown"
    env = (
        f"Guest: kernel {kernel}, {args.memory} RAM, {args.cpus} vCPUs, "
        f"{'KVM' if args.kvm else 'QEMU TCG (software emulation)'}; one fresh VM per row. "
        "Under TCG everything runs several times slower than on hardware, so compare "
        "the daemons with each other rather than with real machines."
    )
    if cfg is not None:
        env += f" Whole matrix took {(time.monotonic() - t0) / 60:.0f} min."
    else:
        env += " Rebuilt from the saved runs (`--from-results`): " + run_dates(outcomes) + "."
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(render(outcomes, command, env))
    print(f"e2e: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
