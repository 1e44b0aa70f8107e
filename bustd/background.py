"""Disk writes off the loop: jobs run one after another in a thread of their own.

A write to the kill log or the metrics file may block for seconds (a slow or
hung disk, dirty-page throttling while memory is short): the loop must never
wait for it (STYLE.md, habit 14). :meth:`Background.submit` queues a job and
returns at once; a thread started for the batch runs the jobs and ends when
none is left, so an idle bustd holds no thread. A job that raises is logged
by the job's own code; one that hangs holds back only the jobs behind it
(at most LIMIT are kept, newer ones are dropped and counted).
"""

from __future__ import annotations

import _thread

from .procfs import start_thread

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    from .log import Log

__all__ = ["LIMIT", "Background", "said_failing"]

LIMIT = 256  # queued jobs at most; beyond, new ones are dropped


class Background:
    """A queue of jobs and at most one thread running them."""

    __slots__ = ("_lock", "_idle", "_jobs", "_running", "dropped")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._idle = _thread.allocate_lock()  # held while a thread runs jobs
        self._jobs: list[Callable[[], None]] = []
        self._running = False
        self.dropped = 0  # jobs refused because LIMIT were queued

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue ``job``; return False (and count it) if LIMIT jobs are already waiting.

        Never blocks on the job. If no thread can be started the job runs
        now, in the caller: better late than lost.
        """
        with self._lock:
            if len(self._jobs) >= LIMIT:
                self.dropped += 1
                return False
            self._jobs.append(job)
            if self._running:
                return True
            self._running = True
            self._idle.acquire()
        if not start_thread(self._run):  # a small stack (procfs.THREAD_STACK)
            self._run()
        return True

    def busy(self) -> bool:
        """Return whether jobs are queued or running."""
        with self._lock:
            return self._running

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._running = False
                    self._idle.release()
                    return
                job = self._jobs.pop(0)
            try:
                job()
            except Exception:  # the job logs its own failures; the queue goes on
                pass

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every queued job; return whether all ran."""
        if self._idle.acquire(True, max(0.0, timeout)):
            self._idle.release()
            return True
        return False


def said_failing(log: Log, what: str, err: Exception | None, failing: bool) -> bool:
    """Say once that ``what`` cannot be written (``err``), or that it is written
    again; return whether writing it is failing now (``failing``: it was)."""
    if err is not None:
        if not failing:
            log.warning(f"cannot write {what}: {getattr(err, 'strerror', None) or err}")
        return True
    if failing:
        log.info(f"{what} written again")
    return False
