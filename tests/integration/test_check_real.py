"""`bustd check` for real, confined to a private PID namespace.

Thresholds of 100 % make the present state an emergency, so the report names
a victim; every child must still be alive afterwards (the check never
signals), and the report must account for every process of the namespace.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.confine import confined
from tests.unit.test_check import validate

REPO = Path(__file__).resolve().parents[2]
CHILD = REPO / "tests" / "integration" / "child.py"


def run(script: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in ``folder`` as PID 1 of a new PID namespace ($PY, $CHILD, $REPO)."""
    return confined(["sh", "-c", f'cd "$1"\nPY="$2"\nCHILD="$3"\nexport PYTHONPATH="$4"\n'
                     f"{script}", "sh", str(folder), sys.executable, str(CHILD), str(REPO)],
                    timeout=120, text=True)


START_CHILDREN = r'''
pids=""
for spec in "big 256" "small 16" "keep 64"; do
  set -- $spec; "$PY" "$CHILD" $1 $2 0 > $1.ready & pids="$pids $!"
done
for f in big small keep; do
  i=0; while [ "$(cat $f.ready)" != ready ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
done
# Beside -m 100 (of user memory, which no kill can reach: issue 14), a level
# 32 MiB above MemAvailable (-M, the lower applies): a kill could end it.
LEVEL=$(( $(awk '/^MemAvailable:/ {print $2}' /proc/meminfo) + 32768 ))
'''
ALIVE = r'''
alive=0; for p in $pids; do kill -0 $p && alive=$((alive+1)); done; echo "alive=$alive" >&2
'''


def test_check_in_a_namespace_names_the_victim_and_signals_nobody(tmp_path: Path) -> None:
    out = run(START_CHILDREN + r'''
"$PY" -m bustd check --json -m 100 -M "$LEVEL" -s 100 --interval 0.5 --top 0 --ignore '^nothing$' \
  > report.json 2> err.txt; echo "rc=$?" >&2
''' + ALIVE, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr.split() == ["rc=0", "alive=3"], (out.stderr, (tmp_path / "err.txt"))
    assert (tmp_path / "err.txt").read_text() == ""
    r: dict[str, Any] = json.loads((tmp_path / "report.json").read_text())
    validate(r)
    assert r["watching"] is True
    d = r["decision"]
    assert d["action"] == "SIGTERM" and d["reason"].startswith("MemAvailable ")
    names = [c["name"] for c in r["candidates"]]
    assert names[0] == "big" and set(names) == {"big", "small", "keep"}, names
    big = r["candidates"][0]
    assert d["victim_pid"] == big["pid"]
    assert big["rss_kib"] > 200 << 10 and big["user"] == "root"
    assert big["growth_kib"] == 0 and big["growth_s"] > 0.4  # sampled twice, not growing
    kinds = {(s["name"], s["kind"]) for s in r["skipped"]}
    assert ("sh", "pid1") in kinds
    assert any(k == "self" for _, k in kinds)
    # Everything in the namespace is accounted for: the shell, the three children, the check.
    assert len(r["candidates"]) + len(r["skipped"]) == 5, r["skipped"]


def test_check_text_fits_80_columns_for_real(tmp_path: Path) -> None:
    out = run(START_CHILDREN + r'''
"$PY" -m bustd check -m 100 -M "$LEVEL" -s 100 --interval 0.3 --dry-run >report.txt
echo "rc=$?" >&2
''' + ALIVE, tmp_path)
    assert out.stderr.split() == ["rc=0", "alive=3"], out.stderr
    text = (tmp_path / "report.txt").read_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert lines[0].startswith("bustd     ") and " check at " in lines[0]
    assert any(line.startswith("decision  SIGTERM to pid ") and "(big)" in line
               for line in lines), text
    assert "dry run: the daemon would only log the kill line" in text
    assert "candidates in kill order (3 of 3; growth over 0.3 s):" in text
    assert "not candidates: PID 1 (sh)" in text


def test_check_options_and_errors() -> None:
    """Outside a namespace only what exits before reading processes: help, errors."""
    def bustd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bustd", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=60, check=False)

    out = bustd("check", "--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: bustd check ")
    for option in ("--json", "--interval", "--top", "--mem", "--config", "never signals"):
        assert option in out.stdout, option
    for args, message in [
            (["check", "--top", "-1"], "argument --top: invalid value '-1'"),
            (["check", "--top", "1.5"], "argument --top: invalid value '1.5'"),
            (["check", "--interval", "x"], "argument --interval: invalid value 'x'"),
            (["check", "--mem", "200"], "argument -m/--mem: invalid value '200'"),
            (["check", "extra"], "unrecognized arguments: extra"),
            (["--json"], "unrecognized arguments: --json")]:
        out = bustd(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.startswith("bustd: error: ") and message in out.stderr, out.stderr
        assert len(out.stderr.splitlines()) == 1
    out = bustd("check", "--proc-root", "/nonexistent")
    assert (out.returncode, out.stderr) == (
        3, "bustd: error: cannot read /nonexistent/meminfo: is --proc-root a /proc tree?\n")


def test_check_reads_the_daemons_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "b.conf"
    conf.write_text("mem = 7\nrank = rss\n# a check option is no daemon option:\n")
    conf.chmod(0o644)
    out = subprocess.run([sys.executable, "-m", "bustd", "check", "-c", str(conf), "--swap", "30",
                          "--print-config"], cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "mem_term_percent = 7.0" in out.stdout and "swap_term_percent = 30.0" in out.stdout
    assert "rank = 'rss'" in out.stdout
    conf.write_text("json = true\n")
    out = subprocess.run([sys.executable, "-m", "bustd", "check", "-c", str(conf)], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=False)
    assert (out.returncode, out.stderr) == (
        2, f"bustd: error: {conf}:1: unknown option 'json'\n")
