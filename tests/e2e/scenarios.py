"""The end-to-end scenarios: what runs in the guest and what must happen.

Pure data, shared by the guest driver (which starts the processes) and the
host runner (which judges the outcome). Sizes are fractions of the guest's
MemAvailable or MemTotal measured just before the hogs start, so a guest with a
different baseline (kernel, daemon footprint) still ends up under pressure.

Roles (every role but "hog" must survive):
  hog        a process that may be killed (scenarios 5 and 7: any of the workers)
  bystander  a small innocent process that must survive
  protected  a large process with oom_score_adj -1000 that must survive
  idle       a large innocent process, started and resident before the hogs,
             never growing: the wrong victim for a daemon that ranks by size
  load       a process that creates memory pressure the machine can absorb:
             it must survive, and no kill is expected at all (max_kills 0)
  probe      the interactive-latency probe; must survive

The driver starts bystander, protected and idle processes first and waits
until each is resident; then the probe and the daemon; then hog and load
processes ("active" roles), whose end (death, or a "grow"/"absorb" process
reaching its size) ends the run after the scenario's settle time.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ACTIVE_ROLES",
    "HOLDER_ROLES",
    "LOW_MEMORY_FRACTION",
    "Proc",
    "Scenario",
    "SCENARIOS",
    "parse_ids",
]

# Started before the daemon and waited for until resident.
HOLDER_ROLES = ("bystander", "protected", "idle")
# Started after the daemon; their end ends the run.
ACTIVE_ROLES = ("hog", "load")
# "Memory runs short" for the record of who is largest then: MemAvailable at
# or below this share of MemTotal (bustd's --psi-mem default, above earlyoom's
# 10 %).
LOW_MEMORY_FRACTION = 0.15


@dataclass(frozen=True)
class Proc:
    """One process the guest driver starts.

    kind selects the program (see workloads.py), or "tail" for
    `tail /dev/zero`. Sizes are fractions; rate is MiB/s (0 = as fast as
    possible). random_fraction is the share of each 4 KiB page filled with
    random bytes, the rest zeros: 0.25 compresses about 4:1 in zram, 1.0 not
    at all. hot_of_available (kind "absorb"): the share of MemAvailable the
    process keeps working on once it reached its size; kind "session": the
    share of MemAvailable it grows to.
    """

    name: str
    role: str
    kind: str
    size_of_available: float = 0.0
    size_of_total: float = 0.0
    size_mib: int = 0
    rate_mib_s: float = 0.0
    random_fraction: float = 0.0
    oom_score_adj: int | None = None
    hot_of_available: float = 0.0


@dataclass(frozen=True)
class Scenario:
    """One scenario: the processes, the swap, the limits and the kill budget.

    zram_mib: size of the zram swap device (0 = no swap).
    timeout_s: how long after the hogs start the driver waits for an outcome.
    max_kills: the most processes that may die in total (daemon and kernel);
      0 means no kill is expected at all.
    min_hog_kills: how many hogs must be killed.
    settle_s: how long the driver keeps watching once every hog and load
      process is dead or done (to catch late or extra kills).
    expect_largest: the process that must be the largest (RSS + swap) when
      memory first runs short (LOW_MEMORY_FRACTION); "" for no such
      precondition. A run where it is not proves nothing and fails.
    tmpfs_leave_pct: after the daemon started, the driver fills a private
      tmpfs with a file no process holds until MemAvailable is at most this
      percent of MemTotal, then waits tmpfs_wait_s before the hogs start
      (0: no tmpfs).
    """

    id: int
    name: str
    zram_mib: int
    timeout_s: float
    procs: tuple[Proc, ...]
    max_kills: int = 1
    min_hog_kills: int = 1
    notes: str = ""
    settle_s: float = 5.0
    expect_largest: str = ""
    tmpfs_leave_pct: float = 0.0
    tmpfs_wait_s: float = 0.0


BYSTANDER = Proc("bystander", "bystander", "hold", size_mib=48)


def absorb(sid: int, rate_mib_s: float, timeout_s: float) -> Scenario:
    """Return an "absorbed by zram" scenario whose program grows at rate_mib_s.

    The program grows to 1.3 x MemAvailable of 3.5:1-compressible pages, then
    keeps working on 0.4 x MemAvailable of them: the cold rest (0.9 x) costs
    zram about a quarter of that in RAM, so the machine settles once zram
    holds it. Nobody may be killed.
    """
    return Scenario(
        id=sid,
        name=f"absorbed by zram, {rate_mib_s:g} MiB/s",
        zram_mib=2048,
        timeout_s=timeout_s,
        procs=(
            BYSTANDER,
            Proc(
                "absorb",
                "load",
                "absorb",
                size_of_available=1.3,
                rate_mib_s=rate_mib_s,
                random_fraction=0.28,
                hot_of_available=0.4,
            ),
        ),
        max_kills=0,
        min_hog_kills=0,
        settle_s=30.0,
        notes=(
            f"grows at {rate_mib_s:g} MiB/s to 1.3 x MemAvailable of 3.5:1-compressible "
            "pages, then keeps working on 0.4 x MemAvailable of them; zram takes the "
            "rest and the machine settles. Watched 30 s after it reached its size: "
            "nobody may be killed."
        ),
    )

SCENARIOS: dict[int, Scenario] = {
    1: Scenario(
        id=1,
        name="fast allocation, no swap",
        zram_mib=0,
        timeout_s=60,
        procs=(BYSTANDER, Proc("tail", "hog", "tail")),
        notes="`tail /dev/zero` grows a line buffer as fast as it can read.",
    ),
    2: Scenario(
        id=2,
        name="steady leak, zram swap",
        zram_mib=512,
        timeout_s=150,
        procs=(
            BYSTANDER,
            Proc("leak", "hog", "leak", rate_mib_s=24, random_fraction=0.5),
        ),
        notes="leaks 24 MiB/s of 2:1-compressible pages until swap is full.",
    ),
    3: Scenario(
        id=3,
        name="working set > RAM, zram swap",
        zram_mib=2048,
        timeout_s=150,
        procs=(
            BYSTANDER,
            Proc(
                "thrash",
                "hog",
                "workingset",
                size_of_total=1.25,
                rate_mib_s=64,
                random_fraction=0.25,
            ),
        ),
        notes=(
            "cycles over 1.25 x MemTotal of 4:1-compressible pages; zram never "
            "fills, so only memory pressure (PSI) shows the stall."
        ),
    ),
    4: Scenario(
        id=4,
        name="protected large process + grower",
        zram_mib=0,
        timeout_s=90,
        procs=(
            BYSTANDER,
            Proc(
                "protected",
                "protected",
                "hold",
                size_of_available=0.45,
                oom_score_adj=-1000,
            ),
            Proc("grower", "hog", "leak", rate_mib_s=24),
        ),
        notes="the largest process has oom_score_adj -1000; the grower must go.",
    ),
    5: Scenario(
        id=5,
        name="several workers exhaust memory",
        zram_mib=0,
        timeout_s=90,
        procs=(
            BYSTANDER,
            Proc("worker1", "hog", "grow", size_of_available=0.37, rate_mib_s=16),
            Proc("worker2", "hog", "grow", size_of_available=0.37, rate_mib_s=16),
            Proc("worker3", "hog", "grow", size_of_available=0.37, rate_mib_s=16),
        ),
        notes=(
            "three workers each grow to 0.37 x MemAvailable and then hold; "
            "together 1.11 x, so one kill leaves room for the other two."
        ),
    ),
    6: Scenario(
        id=6,
        name="large idle process + grower",
        zram_mib=0,
        timeout_s=90,
        procs=(
            BYSTANDER,
            Proc("idle", "idle", "hold", size_of_total=0.42),
            Proc("grower", "hog", "leak", rate_mib_s=40),
        ),
        expect_largest="idle",
        notes=(
            "a 0.42 x MemTotal process, resident before the grower starts and never "
            "growing, beside a leak of 40 MiB/s: the idle one is the largest when memory "
            "runs short, but only the grower may die."
        ),
    ),
    7: Scenario(
        id=7,
        name="many growers + idle process",
        zram_mib=0,
        timeout_s=90,
        procs=(
            BYSTANDER,
            Proc("idle", "idle", "hold", size_mib=120),
            *(
                Proc(f"worker{i}", "hog", "grow", size_of_available=0.07, rate_mib_s=8)
                for i in range(1, 13)
            ),
        ),
        max_kills=3,
        expect_largest="idle",
        notes=(
            "twelve workers grow at 8 MiB/s each to 0.07 x MemAvailable (with their "
            "interpreters, about 13 MiB each, 1.08 x MemAvailable in all) beside an idle "
            "120 MiB process, the largest when memory runs short. With no daemon "
            "MemAvailable bottoms out near 3 % of MemTotal; two workers killed bring it "
            "back above 10 %, a third leaves a margin. The idle one must survive."
        ),
    ),
    8: absorb(8, 8, 260),
    9: absorb(9, 24, 150),
    10: absorb(10, 64, 120),
    11: Scenario(
        id=11,
        name="shared-memory database + grower",
        zram_mib=0,
        timeout_s=90,
        procs=(
            BYSTANDER,
            Proc("database", "idle", "shmdb", size_of_available=0.5),
            Proc("grower", "hog", "leak", rate_mib_s=24),
        ),
        expect_largest="database",
        notes=(
            "a database's layout (issue 13): a 0.5 x MemAvailable shared segment "
            "filled by the postmaster and mapped whole by three backends, each showing "
            "all of it in its RSS, beside a leak of 24 MiB/s. Killing a database process "
            "frees none of the segment: only the grower may die (the database exits if "
            "a backend dies)."
        ),
    ),
    12: Scenario(
        id=12,
        name="growing session process + grower",
        zram_mib=0,
        timeout_s=90,
        procs=(
            BYSTANDER,
            Proc("gnome-shell", "idle", "session", size_of_available=0.3, rate_mib_s=24,
                 hot_of_available=0.7),
            Proc("app", "hog", "leak", rate_mib_s=24),
        ),
        expect_largest="gnome-shell",
        notes=(
            "a process installed in the guest as /usr/bin/gnome-shell (root's, in an "
            "overlay of /usr/bin; on the default avoid list) holds 0.3 x MemAvailable, "
            "then grows at 24 MiB/s up to 0.7 x, beside an app leaking 24 MiB/s: the "
            "session process is the largest and grows as fast, but the app frees what "
            "the emergency needs, so only the app may die (issue 13)."
        ),
    ),
    13: Scenario(
        id=13,
        name="shared-memory database faulting in + grower",
        zram_mib=0,
        timeout_s=90,
        procs=(
            BYSTANDER,
            Proc("database", "idle", "shmdb", size_of_available=0.5, rate_mib_s=40),
            Proc("grower", "hog", "leak", rate_mib_s=24),
        ),
        expect_largest="database",
        notes=(
            "scenario 11 with one backend mapping the shared segment at 40 MiB/s, "
            "faster than the grower leaks: its RSS grows fastest while a kill of it "
            "frees nothing (issue 13). Only the grower may die."
        ),
    ),
    14: Scenario(
        id=14,
        name="full tmpfs beside small apps, then a grower",
        zram_mib=0,
        timeout_s=90,
        procs=(
            *(Proc(f"app{i}", "bystander", "hold", size_mib=4) for i in range(1, 11)),
            Proc("grower", "hog", "leak", rate_mib_s=24),
        ),
        tmpfs_leave_pct=6.0,
        tmpfs_wait_s=15.0,
        notes=(
            "ten small idle apps (4 MiB and an interpreter each); once the daemon runs, "
            "a tmpfs file that no process holds fills memory until MemAvailable is 6 % "
            "of MemTotal (about 0.6 x MemTotal in the tmpfs): no kill can free it, so "
            "for 15 s nobody may be killed; then a grower leaks 24 MiB/s and must be the "
            "one killed (issue 14, review H1)."
        ),
    ),
    15: Scenario(
        id=15,
        name="reader of a mapped file + grower",
        zram_mib=0,
        timeout_s=90,
        procs=(
            BYSTANDER,
            Proc("reader", "idle", "mapread", size_of_available=0.3, rate_mib_s=40,
                 hot_of_available=0.8),
            Proc("grower", "hog", "leak", rate_mib_s=24),
        ),
        notes=(
            "a reader maps a file of 0.8 x MemAvailable (on an ext4 of its own; clean "
            "page cache, which MemAvailable counts), reads 0.3 x at once and the rest "
            "at 40 MiB/s, then keeps re-reading all of it, beside a leak of 24 MiB/s. "
            "Its RSS (file pages) is the largest when the grower starts, but killing "
            "it frees nothing the kernel could not reclaim anyway, and the kernel "
            "reclaims them as the grower grows. Only the grower may die (issue 13)."
        ),
    ),
}


def parse_ids(text: str) -> list[int]:
    """Parse a scenario list such as "all", "3" or "1,3".

    Returns the ids in the order given, without duplicates.
    Raises ValueError naming the first id that is not a known scenario.
    """
    if text.strip() == "all":
        return sorted(SCENARIOS)
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) not in SCENARIOS:
            known = ",".join(str(i) for i in sorted(SCENARIOS))
            raise ValueError(f"unknown scenario {part!r} (known: {known}, all)")
        if int(part) not in ids:
            ids.append(int(part))
    return ids
