"""The long-running process: self-protection, daemonizing, the loop."""
# Started by the front end as ``python3 -S -I bustd/lean.py ARGS`` with the
# validated configuration in $BUSTD_CONFIG. Imports only what the loop needs;
# every module added here costs resident memory for months.
#
# SIGTERM and SIGINT stop it. SIGHUP reads the config file again: the handler
# only sets a flag; between checks the loop spawns the front end in its
# validate-only mode with ARGS (reload.py, loaded on the first SIGHUP) and
# applies the Config it answers from the next check, or keeps the running one
# and logs the one line naming what is wrong.

from __future__ import annotations

import errno
import os
import stat  # already loaded by os: costs nothing
import sys  # built in: costs nothing
import time

from . import __version__, sig
from .config import ENV, EXIT_CONFIG, EXIT_PIDFILE, EXIT_PROC, ConfigError, decode
from .log import Log
from .monitor import Monitor
from .outputs import attach, open_hooks
from .procfs import ProcFS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    from .reload import Reload

__all__ = ["NICE", "check_pid_file", "daemonize", "lock_memory", "main", "protect_self",
           "raise_priority", "reloader"]

MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
PR_SET_NAME = 15
PR_SET_THP_DISABLE = 41


def lock_memory(log: Log) -> None:
    """mlockall so bustd never waits on swap-in while memory is short."""
    # MCL_ONFAULT (Linux >= 4.4) locks pages as they are touched instead of
    # faulting in every mapping (all of libpython) at once; older kernels get
    # plain MCL_CURRENT|MCL_FUTURE. Also names the process "bustd" (comm), and
    # turns transparent huge pages off for it (PR_SET_THP_DISABLE, Linux 3.15):
    # with THP "always" (Debian's kernels) the first touch of a new malloc
    # arena, such as the one of the background command-line reader, faulted
    # in and locked a whole 2 MiB page (+2.8 MiB RssAnon seen in the VM suite).
    import ctypes  # only here: needed once, for mlockall and prctl

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, b"bustd", 0, 0, 0)
    libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)  # failure (old kernel) changes nothing
    err = 0
    for flags in (MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT, MCL_CURRENT | MCL_FUTURE):
        if libc.mlockall(flags) == 0:
            return
        err = ctypes.get_errno()
        if err != errno.EINVAL:
            break
    log.warning(f"mlockall failed ({os.strerror(err)}): bustd may be swapped out "
                "under pressure (raise RLIMIT_MEMLOCK or run as root)")


def protect_self(log: Log) -> None:
    """Set bustd's own oom_score_adj to -1000 so the kernel never picks it."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("-1000")
    except OSError as err:
        log.info(f"cannot set own oom_score_adj to -1000 ({os.strerror(err.errno or 0)}; "
                 "needs CAP_SYS_RESOURCE): the kernel's OOM killer could still pick bustd")


# The niceness bustd runs at (contrib/bustd.service sets the same): processes
# busy on every CPU must not delay the check that sees them coming. At nice 0
# beside twelve CPU-bound workers on 2 CPUs (VM scenario 7, failed in CI and
# in 4 of 5 runs on a loaded host), bustd went about 6 s without a check and
# first acted below the SIGKILL level, when the workers had stopped growing.
NICE = -10


def raise_priority(log: Log, nice: int = NICE) -> None:
    """Run at ``nice`` unless started at a higher priority (a lower nice value)."""
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) > nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as err:
        log.info(f"cannot raise own priority to nice {nice} ({os.strerror(err.errno or 0)}; "
                 "needs CAP_SYS_NICE): processes busy on every CPU can delay bustd's checks")


# The largest pid the kernel can give (PID_MAX_LIMIT, include/linux/threads.h).
PID_MAX_LIMIT = 4 * 1024 * 1024


def check_pid_file(pid_file: str, log: Log) -> None:
    """Return if ``pid_file`` may be (over)written by a new bustd; else raise
    SystemExit(EXIT_PIDFILE), with one line logged naming the file."""
    # It may when it is absent, empty, or names a process that is gone; not
    # when it names a running process, holds anything but a pid, is not a
    # regular file (a directory, a FIFO, which is opened without waiting) or
    # cannot be read.
    def refuse(problem: str) -> SystemExit:
        log.error(f"pid file {pid_file}: {problem}")
        return SystemExit(EXIT_PIDFILE)

    try:
        fd = os.open(pid_file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
                     | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    except OSError as err:
        raise refuse(os.strerror(err.errno or 0)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise refuse("not a regular file")
        data = os.read(fd, 64)
    except OSError as err:
        raise refuse(os.strerror(err.errno or 0)) from None
    finally:
        os.close(fd)
    text = data.strip()
    if not text:
        return
    if not text.isdigit() or not 0 < int(text) <= PID_MAX_LIMIT:
        raise refuse(f"holds {data[:24]!r}, not a pid: remove it, or choose another --pid-file")
    old = int(text)
    try:
        os.kill(old, 0)
    except ProcessLookupError:
        return  # left by a bustd that did not exit cleanly
    except PermissionError:
        raise refuse(f"it names pid {old}, a running process") from None
    raise refuse(f"bustd already running as pid {old}")


def _write_pid_file(pid_file: str) -> None:
    """Write this process's pid to ``pid_file`` atomically; raises OSError or ValueError."""
    # Through a new file of an unpredictable name, never a name another user
    # could have planted (vet.replace, review M3).
    from .vet import replace
    replace(pid_file, f"{os.getpid()}\n".encode(), 0o644, sync=True)


def daemonize(pid_file: str, log: Log) -> None:
    """Fork to the background, detach and write ``pid_file``; raises
    SystemExit(EXIT_PIDFILE) if another live bustd holds it, or it cannot be written."""
    # Returns in the daemon once its pid file is written. The process that
    # called it waits until then and exits with the daemon's status: 0, or
    # EXIT_PIDFILE when the pid file is in use or cannot be written, so the
    # caller (a shell, systemd) sees the documented code.
    check_pid_file(pid_file, log)
    status_r, status_w = os.pipe()
    child = os.fork()
    if child:
        os.close(status_w)
        os._exit(_wait_for_daemon(status_r, child, log))
    os.close(status_r)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    try:
        _write_pid_file(pid_file)
    except (OSError, ValueError) as err:  # ValueError: vet.Unsafe, which names the file
        log.error(f"pid file {pid_file}: {os.strerror(err.errno or 0)}"
                  if isinstance(err, OSError) else str(err))
        _report(status_w, EXIT_PIDFILE)
        raise SystemExit(EXIT_PIDFILE) from None
    _report(status_w, 0)


def _report(fd: int, status: int) -> None:
    """Send the daemon's start-up ``status`` to the waiting parent and close ``fd``."""
    try:
        os.write(fd, bytes((status,)))
    except OSError:
        pass  # the parent is gone: nobody to tell
    finally:
        os.close(fd)


def _wait_for_daemon(fd: int, child: int, log: Log) -> int:
    """Return the status the daemon sends on ``fd`` (1 if it sends none)."""
    try:
        os.waitpid(child, 0)  # the intermediate child exits at once
    except ChildProcessError:
        pass
    status = os.read(fd, 1)
    if not status:
        log.error("the daemon exited before writing its pid file")
        return 1
    return status[0]


# Once a stop is under way, a second SIGTERM or SIGINT is the same request
# (GNU timeout signals the daemon and then its whole process group, a
# terminal's Ctrl-C may follow systemd's SIGTERM): _begin_stop hands both to
# _stopping, which does nothing. A Python handler rather than SIG_IGN: a
# signal noted just before the switch still finds a handler, where SIG_IGN
# would have CPython print "Signal 15 ignored due to race condition".
# After the exit line, _ignore_stops makes them ignored for good: the
# interpreter's finalization puts back the default action of every signal
# with a Python handler, and a stop signal arriving then would kill the
# daemon (status 130 for SIGINT). The kernel is told first, through libc
# (ctypes is loaded by lock_memory), so that no signal can be noted between
# Python's run of the pending ones and its own switch to SIG_IGN.


def _stopping(signum: int, frame: object) -> None:
    pass


def _begin_stop() -> None:
    for signum in (sig.SIGTERM, sig.SIGINT):
        sig.signal(signum, _stopping)


def _ignore_stops() -> None:
    import ctypes

    libc = ctypes.CDLL(None)
    libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.signal.restype = ctypes.c_void_p
    for signum in (sig.SIGTERM, sig.SIGINT):
        libc.signal(signum, int(sig.SIG_IGN))
        sig.signal(signum, sig.SIG_IGN)  # pending ones run _stopping first


def _exit_on_signal(signum: int, frame: object) -> None:
    _begin_stop()
    raise SystemExit(0)


def reloader(argv: list[str], cwd: str) -> Callable[[float], Reload]:
    """Return the function that starts one reading of the config (a reload.Reload)."""
    # The front end runs with the same interpreter and the daemon's original
    # ``argv``, from ``cwd``, the folder bustd started in (``--daemon`` moved
    # it to ``/``, where a relative ``--config`` would name another file).
    python = sys.executable or "python3"
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "validate.py")

    def start(now: float) -> Reload:
        from .reload import Reload
        return Reload(python, script, cwd, argv, now)

    return start


def main() -> int:
    """Run the daemon from $BUSTD_CONFIG; returns the exit code."""
    try:
        cfg = decode(os.environ.pop(ENV, ""))
    except ConfigError as err:
        os.write(2, f"bustd: {err} (start bustd with python3 -m bustd)\n".encode())
        return EXIT_CONFIG
    log = Log(cfg.verbose)
    fs = ProcFS(cfg.proc_root)
    try:
        cwd = os.getcwd()  # before --daemon moves to /: a reload reads the options from here
    except OSError:
        cwd = ""
    try:
        # Before --daemon forks: a refusal reaches the caller as exit code 2.
        programs = open_hooks(cfg)
    except ValueError as err:  # vet.Unsafe: the line names the option and the problem
        log.error(f"{err}")
        return EXIT_CONFIG
    if cfg.daemon:
        daemonize(cfg.pid_file, log)
    hangups: list[int] = []  # a SIGHUP before the loop runs: reload once it does
    for signum in (sig.SIGTERM, sig.SIGINT):
        sig.signal(signum, _exit_on_signal)
    sig.signal(sig.SIGHUP, lambda signum, frame: hangups.append(signum))
    monitor: Monitor | None = None
    close_outputs: Callable[[], None] | None = None
    try:
        lock_memory(log)
        protect_self(log)
        raise_priority(log)
        try:
            monitor = Monitor(cfg, fs, log, os.getpid(), time.monotonic, wall=time.time)
            log.info(f"bustd {__version__} (pid {os.getpid()}) watching {fs.root}: "
                     f"{monitor.describe()}")
        except (OSError, ValueError) as err:
            log.error(f"cannot read {fs.path('meminfo')}: {err}")
            return EXIT_PROC
        if os.geteuid() != 0:
            log.warning(f"running as uid {os.geteuid()}, not root: only that user's "
                        "processes can be killed")
        monitor.reloader = reloader(sys.argv[1:], cwd)
        # Signals end the sleep between checks at once (the handlers below
        # only set flags, and poll() would otherwise resume its timeout).
        # Without a descriptor to spare, a SIGHUP waits for the next check.
        try:
            wake_r, wake_w = os.pipe()
        except OSError as err:
            log.info(f"no signal wakeup pipe ({os.strerror(err.errno or 0)}): a SIGHUP "
                     "takes effect at the next check")
        else:
            os.set_blocking(wake_r, False)
            os.set_blocking(wake_w, False)
            sig.set_wakeup_fd(wake_w)
            monitor.wake_on(wake_r)
        monitor.max_sleep, close_outputs = attach(
            cfg, log, os.environ, os.getpid(), programs, monitor.clock, fs, monitor.outputs,
            monitor.pre_kill)
        stop = monitor.stop  # a kill in progress is finished and logged first

        def on_stop(signum: int, frame: object) -> None:
            _begin_stop()
            stop()

        for signum in (sig.SIGTERM, sig.SIGINT):
            sig.signal(signum, on_stop)
        hangup = monitor.hangup  # sets a flag; the loop reloads between checks
        sig.signal(sig.SIGHUP, lambda signum, frame: hangup())
        if hangups:
            monitor.hangup()
        monitor.run()
    except SystemExit:
        if monitor is not None:
            monitor.cancel_reload()  # its front end is our child: do not leave it behind
            monitor.flush_kills()  # a kill still being measured is logged as it stands
        log.info(f"bustd exiting after {monitor.kills if monitor else 0} kills")
        return 0
    finally:
        if close_outputs is not None:
            close_outputs()
        if cfg.daemon:
            try:
                os.unlink(cfg.pid_file)
            except OSError:
                pass
        _ignore_stops()
    return 0
