"""What fleets get (issue 17): Prometheus rules and the Kubernetes manifest.

* contrib/prometheus/bustd.rules.yml passes ``promtool check rules`` and its
  unit tests (``promtool test rules`` on the synthetic series of
  bustd.rules.test.yml); every bustd series it names is one bustd writes;
  the metrics text bustd writes passes ``promtool check metrics`` (its lint
  included), with every series and with the optional ones left out.
* contrib/kubernetes/bustd.yaml is valid against the Kubernetes schemas
  (``kubernetes-validate --strict``, its bundled schemas, run with no
  network), and holds what README.md says: the host's PID namespace, exactly
  the unit's capabilities bustd uses in a pod, /sys and the exporter's /proc
  read-only, the textfile folder shared, and a ConfigMap that bustd accepts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bustd.metrics import Snapshot, render
from tests.unit.test_killlog_metrics import check

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "contrib" / "prometheus" / "bustd.rules.yml"
RULE_TESTS = REPO / "contrib" / "prometheus" / "bustd.rules.test.yml"
MANIFEST = REPO / "contrib" / "kubernetes" / "bustd.yaml"
UNIT = REPO / "contrib" / "bustd.service"
# node_exporter's own series that the health rules use.
NODE_EXPORTER_SERIES = {"node_textfile_mtime_seconds", "node_textfile_scrape_error"}


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool missing (Debian package prometheus): tests/run installs it "
                    "(tests/install-test-packages)")
    return subprocess.run([exe, *args], input=stdin, capture_output=True, text=True,
                          timeout=120, check=False, cwd=RULES.parent)


def full_snapshot() -> Snapshot:
    return Snapshot(check(), {("SIGTERM", "memory"): 2, ("SIGKILL", "pressure"): 1},
                    {"memory": 4}, {"pressure": 5}, 1_790_000_000.5,
                    {"some": 2_500_000, "full": 1_000_000}, 0.25, 17, {"notification": 2})


def test_rules_pass_promtool_check() -> None:
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"SUCCESS: \d+ rules found", out.stdout), out.stdout


def test_rules_pass_their_unit_tests() -> None:
    out = promtool("test", "rules", str(RULE_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout, out.stdout


def test_rule_tests_fail_for_a_wrong_rule(tmp_path: Path) -> None:
    # The unit tests can fail: a staleness limit ten times too long, a kill
    # count for "repeatedly" ten times too high.
    broken = RULES.read_text().replace("> 120", "> 1200").replace(">= 3", ">= 30")
    assert broken != RULES.read_text()
    (tmp_path / "bustd.rules.yml").write_text(broken)
    (tmp_path / "bustd.rules.test.yml").write_text(RULE_TESTS.read_text())
    out = promtool("test", "rules", str(tmp_path / "bustd.rules.test.yml"))
    assert out.returncode != 0, out.stdout
    assert "BustdMetricsStale" in out.stdout + out.stderr
    assert "BustdKillingRepeatedly" in out.stdout + out.stderr


def test_rules_name_only_series_bustd_writes() -> None:
    written = {line.split()[2] for line in render(full_snapshot()).splitlines()
               if line.startswith("# TYPE ")}
    doc = yaml.safe_load(RULES.read_text())
    exprs = [str(rule["expr"]) for group in doc["groups"] for rule in group["rules"]]
    # Series names; not the recorded ones (level:metric:operation).
    series = re.compile(r"(?<![:\w])(?:bustd|node)_[a-z_]+\b(?!:)")
    named = {name for e in exprs for name in series.findall(e)}
    assert named, exprs
    assert named <= written | NODE_EXPORTER_SERIES, named - written - NODE_EXPORTER_SERIES
    alerts = {rule.get("alert") for group in doc["groups"] for rule in group["rules"]}
    # The list: kills, warnings, time in the watch zone, the daemon's health.
    assert {"BustdKilledProcess", "BustdMemoryWarning", "BustdLongInWatchZone",
            "BustdMetricsStale", "BustdMetricsMissing", "BustdRestarting"} <= alerts


@pytest.mark.parametrize("which", ["every series", "optional series left out"])
def test_metrics_text_passes_promtool_check_metrics(which: str) -> None:
    snap = full_snapshot() if which == "every series" else Snapshot(
        check(stall=None), {}, {}, {}, 0.0, None, None, 1, None)
    out = promtool("check", "metrics", stdin=render(snap))
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), (
        out.stdout + out.stderr)


def test_promtool_check_metrics_can_fail() -> None:
    out = promtool("check", "metrics", stdin="# TYPE bustd_kills counter\nbustd_kills 1\n")
    assert out.returncode != 0 and "_total" in out.stdout + out.stderr


# -- the Kubernetes manifest ---------------------------------------------------

def kubernetes_validate(path: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "kubernetes-validate"
    if not exe.exists():
        pytest.fail(f"{exe} missing: tests/run installs kubernetes-validate from "
                    "tests/requirements.txt")
    # No network: the schemas are the package's own.
    return subprocess.run(["unshare", "--net", str(exe), "--strict", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)


def documents() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text())}


def test_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    out = kubernetes_validate(MANIFEST)
    assert out.returncode == 0, out.stdout + out.stderr
    for kind in ("configmap/bustd", "daemonset/bustd"):
        assert f"passed for resource {kind}" in out.stdout + out.stderr, out.stdout


@pytest.mark.parametrize(("key", "value"), [("hostPID", "yes"), ("hostPIDs", True)])
def test_schema_validation_can_fail(key: str, value: object, tmp_path: Path) -> None:
    # A wrong type, and (--strict) a field Kubernetes does not know.
    docs = list(yaml.safe_load_all(MANIFEST.read_text()))
    docs[1]["spec"]["template"]["spec"][key] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all(docs))
    out = kubernetes_validate(bad)
    assert out.returncode != 0, out.stdout + out.stderr
    assert key in out.stdout + out.stderr, out.stdout + out.stderr


def unit_capabilities() -> set[str]:
    line = next(ln for ln in UNIT.read_text().splitlines()
                if ln.startswith("CapabilityBoundingSet="))
    return {c.removeprefix("CAP_") for c in line.split("=", 1)[1].split()}


def test_daemonset_is_what_readme_says() -> None:
    docs = documents()
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert not pod.get("hostNetwork") and not pod.get("hostIPC")
    containers = {c["name"]: c for c in pod["containers"]}
    bustd, exporter = containers["bustd"], containers["node-exporter"]
    sc = bustd["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True and sc["runAsUser"] == 0
    assert sc["capabilities"]["drop"] == ["ALL"]
    # The unit's set without CAP_SETUID/CAP_SETGID, which only the desktop
    # notification helper uses (no session bus on a node).
    assert set(sc["capabilities"]["add"]) == unit_capabilities() - {"SETUID", "SETGID"}
    assert exporter["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert exporter["securityContext"]["runAsNonRoot"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {c: {m["name"]: m for m in containers[c]["volumeMounts"]} for c in containers}
    # /proc and /sys of the host, read-only wherever they are mounted.
    for c, name in (("bustd", "sys"), ("node-exporter", "sys"), ("node-exporter", "proc")):
        assert mounts[c][name]["readOnly"] is True, (c, name)
        assert mounts[c][name]["recursiveReadOnly"] == "IfPossible", (c, name)
        assert volumes[name]["hostPath"]["path"] == f"/{name}"
    assert "proc" not in mounts["bustd"]  # its /proc is the host PID namespace's own
    # One textfile folder: bustd writes, node_exporter reads.
    assert "emptyDir" in volumes["textfile"]
    assert not mounts["bustd"]["textfile"].get("readOnly")
    assert mounts["node-exporter"]["textfile"]["readOnly"] is True
    assert (f"--collector.textfile.directory={mounts['node-exporter']['textfile']['mountPath']}"
            in exporter["args"])
    # The config comes from the ConfigMap, read-only.
    assert volumes["config"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert mounts["bustd"]["config"]["readOnly"] is True
    conf_path = bustd["command"][bustd["command"].index("--config") + 1]
    folder, key = conf_path.rsplit("/", 1)
    assert folder == mounts["bustd"]["config"]["mountPath"]
    conf = docs["ConfigMap"]["data"][key]
    metrics = re.search(r"^metrics-file = (\S+)$", conf, re.M)
    assert metrics is not None and metrics.group(1).endswith(".prom")
    assert metrics.group(1).rsplit("/", 1)[0] == mounts["bustd"]["textfile"]["mountPath"]
    assert not re.search(r"^notify", conf, re.M)
    # Guaranteed QoS: requests equal limits.
    assert bustd["resources"]["requests"]["memory"] == bustd["resources"]["limits"]["memory"]


def test_configmap_is_a_config_bustd_accepts(tmp_path: Path) -> None:
    conf = tmp_path / "bustd.conf"
    # The metrics folder is the pod's (root's there); here a folder of the
    # test's: the host's /var/lib/prometheus may be the prometheus user's,
    # which bustd refuses for a file it writes as root (issue 15).
    text = documents()["ConfigMap"]["data"]["bustd.conf"]
    text, n = re.subn(r"^metrics-file = \S+$", f"metrics-file = {tmp_path / 'bustd.prom'}",
                      text, flags=re.M)
    assert n == 1
    conf.write_text(text)
    conf.chmod(0o644)
    out = subprocess.run([sys.executable, "-m", "bustd", "--print-config", "--config", str(conf)],
                         cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "kubelet" in out.stdout and "warn_percent" in out.stdout.replace("-", "_"), out.stdout
