"""The frozen configuration passed down to every part of the daemon."""
# The front end (cli.py) builds and validates a :class:`Config`, then hands it
# to the lean runtime through one environment variable (:func:`encode` and
# :func:`decode`), so the long-running process never imports argparse.

from __future__ import annotations

__all__ = ["CHOICES", "DEFAULTS", "DEFAULT_AVOID", "ENV", "EXIT_CONFIG", "EXIT_PIDFILE",
           "EXIT_PROC", "Config", "ConfigError", "decode", "encode"]

ENV = "BUSTD_CONFIG"  # how the front end hands the Config to the runtime
# Exit codes, one per kind of user-caused error.
EXIT_CONFIG = 2
EXIT_PROC = 3
EXIT_PIDFILE = 4

# The default avoid list (--default-avoid), by real path: what a desktop or a
# server cannot lose (peers.md: Fedora's earlyoom list, nohang's desktop
# config; the original bustd's issue 11 killed pacman and gnome-shell).
# Globs on the whole path; /bin, /sbin and /lib are symbolic links to their
# /usr folders on merged-/usr systems, where the real path is the /usr one.
DEFAULT_AVOID = (  # one string, not a tuple: the runtime holds it for good
    # init and the user manager, logind, the D-Bus daemon
    "/usr/lib/systemd/systemd|/lib/systemd/systemd|/sbin/init|/usr/sbin/init|"
    "/usr/lib/systemd/systemd-logind|/lib/systemd/systemd-logind|"
    "/usr/bin/dbus-daemon|/bin/dbus-daemon|/usr/bin/dbus-broker|"
    "/usr/bin/dbus-broker-launch|"
    # remote logins
    "/usr/sbin/sshd|/usr/bin/sshd|/usr/lib/openssh/sshd-session|"
    "/usr/libexec/openssh/sshd-session|/usr/lib/ssh/sshd-session|"
    # display servers
    "/usr/bin/Xorg|/usr/lib/xorg/Xorg|/usr/libexec/Xorg|/usr/bin/Xwayland|"
    # compositors and desktop shells
    "/usr/bin/gnome-shell|/usr/bin/mutter|/usr/bin/plasmashell|/usr/bin/kwin_x11|"
    "/usr/bin/kwin_wayland|/usr/bin/ksmserver|/usr/bin/startplasma-wayland|"
    "/usr/bin/startplasma-x11|/usr/bin/cinnamon|/usr/bin/muffin|/usr/bin/xfwm4|"
    "/usr/bin/xfce4-session|/usr/bin/xfce4-panel|/usr/bin/xfdesktop|/usr/bin/marco|"
    "/usr/bin/mate-session|/usr/bin/mate-panel|/usr/bin/lxqt-session|"
    "/usr/bin/openbox|/usr/bin/sway|/usr/bin/weston|/usr/bin/Hyprland|"
    "/usr/bin/labwc|/usr/bin/i3|/usr/bin/budgie-wm|/usr/bin/budgie-panel|"
    "/usr/bin/phoc|/usr/bin/phosh|/usr/libexec/phosh|"
    # session and display managers
    "/usr/libexec/gnome-session-binary|/usr/lib/gnome-session-binary|"
    "/usr/libexec/gnome-session-ctl|/usr/lib/gnome-session/gnome-session-binary|"
    "/usr/sbin/gdm|/usr/sbin/gdm3|/usr/libexec/gdm-session-worker|"
    "/usr/lib/gdm3/gdm-session-worker|/usr/libexec/gdm-wayland-session|"
    "/usr/lib/gdm3/gdm-wayland-session|/usr/libexec/gdm-x-session|"
    "/usr/lib/gdm3/gdm-x-session|/usr/bin/sddm|/usr/bin/sddm-helper|"
    "/usr/lib/x86_64-linux-gnu/sddm/sddm-helper|/usr/libexec/sddm-helper|"
    "/usr/sbin/lightdm|/usr/bin/lightdm|/usr/bin/slim|"
    # package managers in the middle of a transaction
    "/usr/bin/dpkg|/usr/bin/apt|/usr/bin/apt-get|/usr/lib/apt/methods/*|"
    "/usr/bin/rpm|/usr/bin/dnf5|/usr/bin/zypper|/usr/bin/pacman|/usr/bin/yay|"
    "/usr/bin/pamac|/usr/bin/pamac-daemon|/sbin/apk|/usr/sbin/apk|"
    "/usr/libexec/packagekitd|/usr/lib/packagekit/packagekitd|/usr/bin/flatpak|"
    "/usr/libexec/flatpak-system-helper"
)

# name -> default. The default's type is the field's type; None means an
# optional number (int KiB or float seconds, see _OPTIONAL).
DEFAULTS: dict[str, object] = {
    "mem_term_percent": 10.0,
    "mem_kill_percent": 5.0,
    "swap_term_percent": 10.0,
    "swap_kill_percent": 5.0,
    "mem_term_kib": None,
    "mem_kill_kib": None,
    "swap_term_kib": None,
    "swap_kill_kib": None,
    "psi_cutoff": 25.0,
    "psi_metric": "some",
    "psi_mem_percent": 15.0,
    "psi_duration": 5.0,
    "swapin_rate": 1.0,
    "watch_percent": 25.0,
    "rank": "growth",
    "unkillables": "",
    "ignore": "",
    "prefer": "",
    "avoid": "",
    "default_avoid": DEFAULT_AVOID,
    "grace": 0.5,
    "kill_pgroup": False,
    "dry_run": False,
    "daemon": False,
    "pid_file": "/run/bustd.pid",
    "report": 3600.0,
    "verbose": False,
    "proc_root": "/proc",
    "sys_root": "/sys",
    # Telling people and machines (issue 8): warnings, notifications, hooks,
    # the kill log and the metrics file. Empty path or 0: off.
    "warn_percent": 0.0,
    "notify": False,
    "notify_owner_only": False,
    "pre_kill_hook": "",
    "post_kill_hook": "",
    "hook_timeout": 0.2,
    "kill_log": "",
    "metrics_file": "",
    # cgroup v2 (issue 9): watch one subtree; kill a victim's whole cgroup.
    "cgroup": "",
    "kill_cgroup": False,
}
_OPTIONAL = frozenset(("mem_term_kib", "mem_kill_kib", "swap_term_kib", "swap_kill_kib"))
# Settings that take one of a few words: the one list of each (the options'
# choices; the rankings victim.POLICIES implements).
CHOICES = {"psi_metric": ("some", "full"), "rank": ("growth", "oom_score", "rss")}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key."""


class Config:
    """Immutable settings; every field of DEFAULTS is an attribute."""

    __slots__ = tuple(DEFAULTS)

    mem_term_percent: float
    mem_kill_percent: float
    swap_term_percent: float
    swap_kill_percent: float
    mem_term_kib: int | None
    mem_kill_kib: int | None
    swap_term_kib: int | None
    swap_kill_kib: int | None
    psi_cutoff: float
    psi_metric: str
    psi_mem_percent: float
    psi_duration: float
    swapin_rate: float
    watch_percent: float
    rank: str
    unkillables: str
    ignore: str
    prefer: str
    avoid: str
    default_avoid: str
    grace: float
    kill_pgroup: bool
    dry_run: bool
    daemon: bool
    pid_file: str
    report: float
    verbose: bool
    proc_root: str
    sys_root: str
    warn_percent: float
    notify: bool
    notify_owner_only: bool
    pre_kill_hook: str
    post_kill_hook: str
    hook_timeout: float
    kill_log: str
    metrics_file: str
    cgroup: str
    kill_cgroup: bool

    def __init__(self, **values: object) -> None:
        for key in values:
            if key not in DEFAULTS:
                raise ConfigError(f"unknown setting {key!r}")
        for key, default in DEFAULTS.items():
            value = values.get(key, default)
            if key in _OPTIONAL:
                if value is not None and (type(value) is not int or value < 0):
                    raise ConfigError(f"{key}: expected a KiB count, got {value!r}")
            elif type(default) is float and type(value) is int:
                value = float(value)
            elif type(value) is not type(default):
                raise ConfigError(f"{key}: expected {type(default).__name__}, got {value!r}")
            elif key in CHOICES and value not in CHOICES[key]:
                raise ConfigError(f"{key}: expected one of {', '.join(CHOICES[key])}, "
                                  f"got {value!r}")
            object.__setattr__(self, key, value)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"Config is frozen: cannot set {key}")

    def replace(self, **changes: object) -> Config:
        """Return a copy with ``changes`` applied."""
        values = {key: getattr(self, key) for key in DEFAULTS}
        values.update(changes)
        return Config(**values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and all(
            getattr(self, k) == getattr(other, k) for k in DEFAULTS)

    def __repr__(self) -> str:
        return "Config(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in DEFAULTS) + ")"

    @property
    def live(self) -> bool:
        """True when reading the kernel's own /proc (signals and triggers allowed)."""
        return self.proc_root.rstrip("/") == "/proc"


# Characters that cannot stand as themselves in the encoding: the separators
# and NUL, which no environment variable can hold.
_ESCAPES = {"\\": "\\", "\n": "n", "\t": "t", "\0": "0"}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}


def _escape(text: str) -> str:
    """Return ``text`` with backslash, newline, tab and NUL written as ``\\x``."""
    for ch in ("\\", "\n", "\t", "\0"):  # the backslash first
        if ch in text:
            text = text.replace(ch, "\\" + _ESCAPES[ch])
    return text


def _unescape(text: str) -> str:
    """Return the text :func:`_escape` was given (an unknown ``\\x`` reads as x)."""
    if "\\" not in text:
        return text
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            i += 1
            ch = _UNESCAPES.get(text[i], text[i])
        out.append(ch)
        i += 1
    return "".join(out)


def encode(cfg: Config) -> str:
    """Return ``cfg`` as one line-based string (for an environment variable).

    The result holds no NUL byte, whatever the strings in ``cfg`` hold.
    """
    return "\n".join(f"{k}\t{_escape(str(getattr(cfg, k)))}" for k in DEFAULTS)


def decode(text: str) -> Config:
    """Return the Config encoded by :func:`encode`; raises ConfigError."""
    values: dict[str, object] = {}
    for line in text.split("\n"):
        key, sep, raw = line.partition("\t")
        if not sep or key not in DEFAULTS:
            raise ConfigError(f"encoded config: bad line {line[:60]!r}")
        value = _unescape(raw)
        default = DEFAULTS[key]
        try:
            if key in _OPTIONAL:
                values[key] = None if value == "None" else int(value)
            elif type(default) is bool:
                values[key] = value == "True"
            elif type(default) is float:
                values[key] = float(value)
            else:
                values[key] = value
        except ValueError:
            raise ConfigError(f"encoded config: bad value for {key}: {value!r}") from None
    return Config(**values)
