"""Config: frozen, validated, and carried through encode/decode unchanged."""

from __future__ import annotations

import pytest

from bustd.config import DEFAULTS, Config, ConfigError, decode, encode


def test_defaults() -> None:
    cfg = Config()
    for key, value in DEFAULTS.items():
        assert getattr(cfg, key) == value
    assert cfg.live
    assert not Config(proc_root="/tmp/fake").live
    assert Config(proc_root="/proc/").live


def test_frozen() -> None:
    cfg = Config()
    with pytest.raises(AttributeError, match="frozen"):
        cfg.mem_term_percent = 50.0
    with pytest.raises(AttributeError):
        cfg.no_such_thing = 1
    assert cfg.mem_term_percent == 10.0


def test_replace_returns_a_validated_copy() -> None:
    cfg = Config()
    other = cfg.replace(psi_cutoff=50)
    assert other.psi_cutoff == 50.0 and type(other.psi_cutoff) is float
    assert cfg.psi_cutoff == 25.0
    assert other != cfg and cfg == Config()
    with pytest.raises(ConfigError, match="psi_cutoff"):
        cfg.replace(psi_cutoff="high")


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match="'mem_trem_percent'"):
        Config(mem_trem_percent=5.0)


@pytest.mark.parametrize(("key", "value"), [
    ("mem_term_percent", "10"),
    ("mem_term_percent", None),
    ("mem_kill_percent", True),   # a bool is not a number here
    ("kill_pgroup", 1),
    ("rank", "size"),
    ("psi_metric", "half"),
    ("dry_run", "yes"),
    ("unkillables", ["sshd"]),
    ("psi_metric", b"some"),
    ("proc_root", None),
    ("mem_term_kib", 1.5),
    ("mem_kill_kib", -1),
    ("swap_term_kib", "100"),
    ("swap_kill_kib", False),
])
def test_wrong_type_is_named(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**{key: value})
    assert str(info.value).startswith(f"{key}:")


def test_int_accepted_for_float() -> None:
    cfg = Config(grace=2, report=0)
    assert (cfg.grace, cfg.report) == (2.0, 0.0)
    assert type(cfg.grace) is float
    assert Config(mem_term_kib=0, swap_kill_kib=123).swap_kill_kib == 123


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


HOSTILE = [
    "", "\\", "\\\\", "\\n", "a\nb", "\t", "a\\tb\tc", "x\\", "\n\n\\\n",
    r"^(foo|bar)\d+\s*$", "tab\there\\t", "é\u2028\x00\x7f", "None", "True",
    "\0", "a\\0b", "\\\0", "\udcff",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_round_trip_of_hostile_strings(text: str) -> None:
    cfg = Config(ignore=text, prefer=text, avoid=text, unkillables=text,
                 pid_file="/run/" + text, proc_root=text or "/proc")
    back = decode(encode(cfg))
    assert back == cfg
    assert (back.ignore, back.prefer, back.avoid, back.unkillables) == (text,) * 4
    assert back.pid_file == "/run/" + text


def test_round_trip_of_every_type() -> None:
    cfg = Config(mem_term_percent=12.345678901234, mem_kill_percent=0.1, mem_term_kib=0,
                 mem_kill_kib=2**53, swap_term_kib=None, swap_kill_kib=7, psi_cutoff=0,
                 psi_metric="full", rank="rss", kill_pgroup=True, dry_run=True,
                 daemon=True, verbose=True, grace=1e-9, report=86400)
    back = decode(encode(cfg))
    assert back == cfg
    for key in DEFAULTS:
        assert type(getattr(back, key)) is type(getattr(cfg, key)), key
    assert decode(encode(Config())) == Config()


def test_encoding_holds_no_nul() -> None:
    """An environment variable cannot hold NUL: the hand-over would fail."""
    text = encode(Config(ignore="a\0b", pid_file="/run/\0"))
    assert "\0" not in text
    assert decode(text).ignore == "a\0b"


def test_encoding_is_one_line_per_key() -> None:
    text = encode(Config(ignore="a\nb\tc"))
    lines = text.split("\n")
    assert len(lines) == len(DEFAULTS)
    assert all(line.count("\t") == 1 for line in lines)


@pytest.mark.parametrize("text", [
    "",
    "garbage",
    "nonsense\t1",
    "mem_term_percent 5",
])
def test_decode_bad_lines(text: str) -> None:
    with pytest.raises(ConfigError, match="bad line"):
        decode(text)


@pytest.mark.parametrize(("text", "key"), [
    ("mem_term_percent\tlots", "mem_term_percent"),
    ("mem_term_kib\t1.5", "mem_term_kib"),
    ("mem_kill_kib\t-3", "mem_kill_kib"),
])
def test_decode_bad_values_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        decode(text)


def test_decode_keeps_defaults_for_absent_keys() -> None:
    assert decode("psi_cutoff\t0.0") == Config(psi_cutoff=0.0)
