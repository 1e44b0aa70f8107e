"""The end-to-end scenarios: what runs in the guest and what must happen.

Pure data, shared by the guest driver (which starts the processes) and the
host runner (which judges the outcome). Sizes are fractions of the guest's
MemAvailable or MemTotal measured just before the hogs start, so a guest with a
different baseline (kernel, daemon footprint) still ends up under pressure.

Roles:
  hog        a process that should be killed (scenario 5: any of the workers)
  bystander  an innocent process that must survive
  protected  a large process with oom_score_adj -1000 that must survive
  probe      the interactive-latency probe; must survive
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Proc", "Scenario", "SCENARIOS", "parse_ids"]


@dataclass(frozen=True)
class Proc:
    """One process the guest driver starts.

    kind selects the program (see workloads.py), or "tail" for
    `tail /dev/zero`. Sizes are fractions; rate is MiB/s (0 = as fast as
    possible). random_fraction is the share of each 4 KiB page filled with
    random bytes, the rest zeros: 0.25 compresses about 4:1 in zram, 1.0 not
    at all.
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


@dataclass(frozen=True)
class Scenario:
    """One scenario: the processes, the swap, the limits and the kill budget.

    zram_mib: size of the zram swap device (0 = no swap).
    timeout_s: how long after the hogs start the driver waits for an outcome.
    max_kills: the most processes that may die in total (daemon and kernel).
    min_hog_kills: how many hogs must be killed.
    """

    id: int
    name: str
    zram_mib: int
    timeout_s: float
    procs: tuple[Proc, ...]
    max_kills: int = 1
    min_hog_kills: int = 1
    notes: str = ""


BYSTANDER = Proc("bystander", "bystander", "hold", size_mib=48)

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
