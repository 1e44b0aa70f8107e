"""What every output receives, and building the outputs the configuration asks for."""
# An output is a callable that receives every :data:`Record`: a
# :class:`~bustd.record.KillRecord` after each kill, a
# :class:`~bustd.record.WarnRecord` when a kill may come soon, and a
# :class:`CheckRecord` at the end of every check; it keeps what it wants
# (``record.kind``). This is the one place that knows which output each
# option turns on; the loop only calls ``Monitor.outputs`` (and
# ``Monitor.pre_kill``). Each output's module is imported only when its option
# is set (or, for systemd's, when $NOTIFY_SOCKET is), so an unused output
# costs the daemon nothing.
# CheckRecord lives here, not in record.py, because the idle loop builds one
# at every check: loading record.py for it costs an idle daemon 28-40 KiB.

from __future__ import annotations

import os  # already loaded by the runtime: costs nothing

from .config import Config
from .log import Log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, ClassVar, Literal, Mapping, Union

    from .meminfo import MemInfo
    from .procfs import BackgroundRead, ProcFS
    from .record import KillRecord, WarnRecord

    Record = Union[KillRecord, WarnRecord, "CheckRecord"]


__all__ = ["DRAIN", "CheckRecord", "attach", "open_hooks"]

DRAIN = 2.0  # seconds a stopping bustd waits for queued kill-log lines


class CheckRecord:
    """What one check saw: for outputs that follow every check (metrics, systemd)."""
    # ``mem`` is the memory reading (swap at its zram worth while watching),
    # ``stall`` the stall percentage over about a second (None when not
    # measured), ``scan_s`` how long the last scan of the processes took,
    # ``kills`` the kills so far and ``dying`` the victims still alive after
    # SIGKILL.

    kind: ClassVar[Literal["check"]] = "check"
    __slots__ = ("now", "mem", "stall", "watching", "scan_s", "kills", "dying")

    def __init__(self, now: float, mem: MemInfo, stall: float | None, watching: bool,
                 scan_s: float, kills: int, dying: int) -> None:
        self.now = now  # monotonic seconds
        self.mem = mem
        self.stall = stall
        self.watching = watching
        self.scan_s = scan_s
        self.kills = kills
        self.dying = dying


def open_hooks(cfg: Config) -> dict[str, int]:
    """Return a descriptor of each hook of ``cfg``, by path, checked once for good;
    raises vet.Unsafe naming the option and the problem."""
    # The hooks are run from these descriptors (spawn.spawn), so what was
    # checked here is what runs at every kill, whatever happens to the path
    # later (review H4).
    programs: dict[str, int] = {}
    if not (cfg.pre_kill_hook or cfg.post_kill_hook):
        return programs
    from .vet import Unsafe, open_hook
    for option, path in (("--pre-kill-hook", cfg.pre_kill_hook),
                         ("--post-kill-hook", cfg.post_kill_hook)):
        if path and path not in programs:
            try:
                programs[path] = open_hook(path)
            except Unsafe as err:
                for fd in programs.values():
                    os.close(fd)
                raise Unsafe(f"{option}: {err}") from None
    return programs


def attach(cfg: Config, log: Log, environ: Mapping[str, str], pid: int,
           programs: Mapping[str, int], clock: Callable[[], float], fs: ProcFS,
           outputs: list[Callable[[Record], None]],
           pre_kill: list[Callable[[KillRecord, BackgroundRead], None]]
           ) -> tuple[float, Callable[[], None]]:
    """Add the outputs ``cfg`` and ``environ`` ask for to ``outputs`` and ``pre_kill``
    (the loop's lists); return the longest sleep they allow between checks
    (inf: any) and a closer."""
    # ``programs`` maps each hook's path to the descriptor it was checked
    # and opened with at start (:func:`open_hooks`); ``clock`` is the loop's
    # and ``fs`` its /proc.
    #
    # The closer (call it once, when bustd stops) waits up to DRAIN seconds
    # for queued kill-log lines and tells systemd bustd is stopping.
    max_sleep = float("inf")
    closers: list[Callable[[], object]] = []
    children = None
    if cfg.notify or cfg.pre_kill_hook or cfg.post_kill_hook:
        from .spawn import Children
        children = Children(log, clock)
        outputs.append(children.on_record)  # reaps when awake anyway
    if cfg.pre_kill_hook:
        from .hooks import PreKillHook
        assert children is not None
        pre_kill.append(PreKillHook(cfg.pre_kill_hook, programs[cfg.pre_kill_hook],
                                    cfg.hook_timeout, children, log))
    if cfg.post_kill_hook:
        from .hooks import PostKillHook
        assert children is not None
        outputs.append(PostKillHook(cfg.post_kill_hook, programs[cfg.post_kill_hook],
                                    children))
    if cfg.notify:
        from .notify import Notifier
        assert children is not None
        outputs.append(Notifier(cfg.notify_owner_only, children))
    if cfg.kill_log:
        from .background import Background
        from .killlog import KillLog
        lines = Background()
        outputs.append(KillLog(cfg.kill_log, lines, log))
        closers.append(lambda: lines.drain(DRAIN))
    if cfg.metrics_file:
        from .background import Background
        from .metrics import Metrics
        outputs.append(Metrics(cfg.metrics_file, Background(), log, fs, cfg.psi_metric,
                               children))
    if environ.get("NOTIFY_SOCKET"):
        from .sdnotify import from_environment
        notifier, close = from_environment(environ, log, pid)
        if notifier is not None:
            outputs.append(notifier)
            if notifier.ping_every:
                max_sleep = notifier.ping_every / 2
            closers.append(close)

    def close_all() -> None:
        for close in closers:
            close()
    return max_sleep, close_all
