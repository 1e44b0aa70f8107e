"""Host side: boot one throwaway VM with virtme-ng and run one command in it.

virtme-ng (`vng`) boots a kernel under QEMU with the host's own filesystem as
a read-only root (tmpfs overlays on top), so the repository, python3 and the
daemons' binaries are all visible in the guest at the same paths. A --rwdir is
the only thing the guest can write to on the host.

KVM hangs during guest boot on this host, so QEMU runs in software emulation
(--disable-kvm, TCG); a boot takes about 20-25 s.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass

__all__ = ["VmConfig", "VmRun", "boot", "boot_systemd", "find_kernel", "missing_prereqs",
           "vng_argv", "vng_systemd_argv"]


@dataclass(frozen=True)
class VmConfig:
    """How to boot: kernel image, guest RAM (QEMU syntax), CPUs, KVM or not."""

    kernel: str
    memory: str = "1G"
    cpus: int = 2
    kvm: bool = False


@dataclass(frozen=True)
class VmRun:
    """What a boot gave: vng's exit code (None on timeout) and wall time."""

    exit_code: int | None
    seconds: float


def _version_key(path: str) -> list[int]:
    """Sort key for /boot/vmlinuz-6.1.0-56-amd64: its numbers in order."""
    return [int(n) for n in re.findall(r"\d+", os.path.basename(path))]


def find_kernel(boot_dir: str = "/boot") -> str | None:
    """Return the newest kernel in boot_dir whose config has PSI, or None.

    A kernel without a readable config-<version> next to it is skipped: the
    suite needs CONFIG_PSI=y and modules (zram, 9p) installed for it.
    """
    for image in sorted(glob.glob(f"{boot_dir}/vmlinuz-*"), key=_version_key, reverse=True):
        version = os.path.basename(image)[len("vmlinuz-") :]
        try:
            with open(f"{boot_dir}/config-{version}") as f:
                config = f.read()
        except OSError:
            continue
        if "CONFIG_PSI=y" in config and os.path.isdir(f"/lib/modules/{version}"):
            return image
    return None


def missing_prereqs(kernel: str | None) -> list[str]:
    """Return one message per missing host prerequisite (empty: all there)."""
    missing = []
    if shutil.which("vng") is None:
        missing.append("vng not on PATH (pip install virtme-ng)")
    if shutil.which("qemu-system-x86_64") is None:
        missing.append("qemu-system-x86_64 not on PATH (apt-get install qemu-system-x86)")
    if kernel is None:
        missing.append(
            "no kernel with CONFIG_PSI=y and modules in /boot (apt-get install linux-image-amd64)"
        )
    elif not os.access(kernel, os.R_OK):
        missing.append(f"kernel {kernel} is not readable")
    if shutil.which("busybox") is None:
        missing.append("busybox not on PATH (apt-get install busybox-static)")
    return missing


def vng_argv(cfg: VmConfig, rwdir: str, cwd: str, command: list[str]) -> list[str]:
    """Return the vng command line that runs `command` in a fresh guest."""
    argv = [
        "vng",
        "--run",
        cfg.kernel,
        "--memory",
        cfg.memory,
        "--cpus",
        str(cfg.cpus),
        "--rwdir",
        rwdir,
        "--cwd",
        cwd,
    ]
    if not cfg.kvm:
        argv.append("--disable-kvm")
    return [*argv, "--exec", shlex.join(command)]


def vng_systemd_argv(cfg: VmConfig, rwdir: str, kernel_args: list[str]) -> list[str]:
    """Return the vng command line that boots a guest with systemd as PID 1.

    vng runs no command then: ``kernel_args`` (each one kernel option, which
    may hold spaces) must make systemd run one (see systemd_cases.py).
    """
    argv = ["vng", "--run", cfg.kernel, "--systemd", "--memory", cfg.memory, "--cpus",
            str(cfg.cpus), "--rwdir", rwdir]
    if not cfg.kvm:
        argv.append("--disable-kvm")
    for arg in kernel_args:
        argv += ["--append", shlex.quote(arg)]  # vng splits each --append like a shell
    return argv


def boot(
    cfg: VmConfig, rwdir: str, cwd: str, command: list[str], console: str, timeout_s: float
) -> VmRun:
    """Boot a guest that runs `command`, its console going to the file `console`.

    Returns the exit code of vng (None if it was killed after timeout_s) and
    the wall time. Raises OSError if vng cannot be started.
    """
    return _run(vng_argv(cfg, rwdir, cwd, command), console, timeout_s)


def boot_systemd(
    cfg: VmConfig, rwdir: str, kernel_args: list[str], console: str, timeout_s: float
) -> VmRun:
    """Boot a guest with systemd as PID 1 (see :func:`vng_systemd_argv`); as :func:`boot`."""
    return _run(vng_systemd_argv(cfg, rwdir, kernel_args), console, timeout_s)


def _run(argv: list[str], console: str, timeout_s: float) -> VmRun:
    """Run vng ``argv`` with its output in the file ``console``; see :func:`boot`."""
    t0 = time.monotonic()
    with open(console, "wb") as out:
        out.write(("$ " + shlex.join(argv) + "\n").encode())
        out.flush()
        # A new session so that on timeout the whole group (vng, qemu) goes.
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code: int | None = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            code = None
    return VmRun(code, time.monotonic() - t0)
