"""The layering, checked: which module may import which (README, "The code: a module map").

The layer of each module is read from the README's map, so the map is the
one statement of the layers and this test keeps it true. Imports are read
with ``ast``: *top level* is module level (``try`` included), *lazy* is
inside a function, *type only* is under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "bustd"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))
ROW = re.compile(r"^\| `(\w+)` \| (\w+) \| (idle)? *\|", re.M)
MAP = {m[0]: (m[1], m[2] == "idle") for m in ROW.findall((ROOT / "README.md").read_text())}
LAYER = {name: layer for name, (layer, _) in MAP.items()}
IDLE = sorted(name for name, (_, idle) in MAP.items() if idle)
IO = {"os", "select", "_thread", "_socket", "socket", "io", "ctypes", "subprocess"}
FRONT_ONLY = {"bustd.cli", "bustd.check", "bustd.manpage", "argparse", "json", "re"}


def parse(name: str) -> ast.Module:
    """Return the syntax tree of the package module ``name``."""
    return ast.parse((PACKAGE / f"{name}.py").read_text())


def imports(name: str) -> list[tuple[str, str, list[str]]]:
    """Return (module, "top" | "lazy" | "type", names) for each import in ``name``."""
    found: list[tuple[str, str, list[str]]] = []

    def visit(nodes: list[ast.AST], where: str) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.extend((a.name.split(".")[0] if not a.name.startswith("bustd.") else
                              a.name, where, []) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                names = [a.name for a in node.names]
                base = ("bustd." * (node.level > 0)) + (node.module or "")
                if base in ("bustd.", "bustd"):  # modules, or names of __init__
                    found.extend((f"bustd.{n}", where, []) for n in names if n in MODULES)
                    rest = [n for n in names if n not in MODULES]
                    found.extend([("bustd.__init__", where, rest)] if rest else [])
                else:
                    found.append((base if base.startswith("bustd") else base.split(".")[0],
                                  where, names))
            elif isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                visit(list(node.body), "type")
                visit(list(node.orelse), where)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(list(node.body), "type" if where == "type" else "lazy")
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit([n for n in getattr(node, field, []) if isinstance(n, ast.AST)],
                          where)

    visit(list(parse(name).body), "top")
    return [(m, w, n) for m, w, n in found if m != "__future__"]


def own(name: str, kinds: tuple[str, ...] = ("top", "lazy", "type")) -> set[str]:
    """Return the bustd modules ``name`` imports, by the given kinds of import."""
    return {m[6:] for m, w, _ in imports(name) if w in kinds and m.startswith("bustd.")}


def closure(start: str, kinds: tuple[str, ...]) -> set[str]:
    """Return ``start`` and every bustd module it loads, by the given kinds of import."""
    seen, todo = {"__init__"}, [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(own(name, kinds))
    return seen


def in_layer(*layers: str) -> list[str]:
    """Return the modules the README's map puts in ``layers``."""
    return [name for name in MODULES if LAYER.get(name) in layers]


def test_the_readme_map_names_exactly_the_package_modules() -> None:
    assert sorted(MAP) == MODULES
    assert set(LAYER.values()) == {"shared", "reader", "pure", "sense", "act", "output",
                                   "loop", "front"}


@pytest.mark.parametrize("name", in_layer("shared", "reader"))
def test_shared_modules_and_readers_import_only_shared_modules_and_readers(name: str) -> None:
    allowed = {"shared"} if LAYER[name] == "shared" else {"shared", "reader"}
    assert {m for m in own(name) if LAYER[m] not in allowed} == set()


@pytest.mark.parametrize("name", in_layer("sense"))
def test_sensors_import_only_shared_modules_readers_and_pure_decisions(name: str) -> None:
    # what the daemon and the check both read: nothing of killing, nor of the loop
    assert {m for m in own(name) if LAYER[m] not in ("shared", "reader", "pure")} == set()


@pytest.mark.parametrize("name", in_layer("pure"))
def test_pure_decisions_do_no_io(name: str) -> None:
    tree = parse(name)
    calls = {n.func.id for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert calls & {"open", "print", "input", "exec", "eval", "__import__"} == set()
    assert {m for m, _, _ in imports(name)} & IO == set()
    for module, kind, names in imports(name):
        other = module[6:] if module.startswith("bustd.") else ""
        if kind == "type" or LAYER.get(other) in (None, "pure") or other in ("config", "sig"):
            continue  # pure, a type, the settings or the signal numbers
        text = {"size", "safe", "pct"} if other == "log" else set()
        # from anything else only its classes and constants (or log's text helpers)
        assert [n for n in names if not n[0].isupper() and n not in text] == [], module
        assert names, f"{name} imports the whole of {module}"


@pytest.mark.parametrize("name", in_layer("output"))
def test_outputs_never_import_the_loop_or_the_emergency(name: str) -> None:
    assert own(name) & {"monitor", "emergency", "runtime", "reload"} == set()


@pytest.mark.parametrize("name", [m for m in MODULES if m != "monitor"])
def test_no_function_outside_the_loop_module_takes_the_monitor(name: str) -> None:
    tree = parse(name)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg):
                if arg is None:
                    continue
                hint = ast.unparse(arg.annotation) if arg.annotation else ""
                assert "Monitor" not in hint and arg.arg != "monitor", f"{node.name}({arg.arg})"


def test_the_monitor_keeps_at_most_30_attributes() -> None:
    # The loop (wake, read, decide, hand over, record, sleep) holds what it needs
    # between checks; the watch zone, the kill and the sensors own the rest.
    tree = parse("monitor")
    monitor = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Monitor")
    stored = {n.attr for n in ast.walk(monitor)
              if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
              and isinstance(n.value, ast.Name) and n.value.id == "self"}
    assert 0 < len(stored) <= 30, sorted(stored)


@pytest.mark.parametrize("name", MODULES)
def test_no_function_is_over_100_lines(name: str) -> None:
    tree = parse(name)
    long = [f"{n.name}: {(n.end_lineno or n.lineno) - n.lineno + 1} lines" for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and (n.end_lineno or n.lineno) - n.lineno + 1 > 100]
    assert long == []


@pytest.mark.parametrize("name", in_layer("front"))
def test_the_front_end_never_imports_the_loop(name: str) -> None:
    assert own(name, ("top", "lazy")) & set(in_layer("loop")) == set()


def test_nothing_the_runtime_can_load_imports_the_front_end_or_argparse_json_re() -> None:
    # Everything lean.py can ever load (lazy imports followed: the watch
    # zone, the options, a reload), and what each imports at top level.
    for name in sorted(closure("lean", ("top", "lazy"))):
        assert LAYER[name] != "front", name
        top = {m for m, w, _ in imports(name) if w == "top"}
        assert top & FRONT_ONLY == set(), name


def test_the_idle_import_set_computed_from_lean_py_is_the_documented_one() -> None:
    assert sorted(closure("lean", ("top",))) == IDLE


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare(1) for a private PID namespace")
def test_the_idle_import_set_measured_in_a_dry_run_is_the_documented_one() -> None:
    # The real runtime (lean.py's main) on the real /proc in a private PID
    # namespace, given its Config as the front end gives it, with levels low
    # enough that no host is in the watch zone; a thread lists its bustd
    # modules after 2 s and stops it with SIGTERM.
    from bustd.config import ENV, Config, encode
    cfg = Config().replace(dry_run=True, mem_term_percent=1.0, mem_kill_percent=0.5,
                           psi_mem_percent=1.0, watch_percent=1.0)
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env[ENV] = encode(cfg)
    probe = (f"import os, sys, _thread, time\nsys.path.insert(0, {str(ROOT)!r})\n"
             "def listing():\n    time.sleep(2)\n"
             "    os.write(1, ' '.join(m for m in sys.modules if m.split('.')[0] == 'bustd')"
             ".encode())\n    os.kill(os.getpid(), 15)\n"
             "_thread.start_new_thread(listing, ())\n"
             "from bustd.runtime import main\nsys.exit(main())\n")
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable,
                           "-S", "-I", "-c", probe, "--dry-run"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    loaded = {"__init__" if m == "bustd" else m[6:] for m in done.stdout.split()}
    assert sorted(loaded | {"lean"}) == IDLE, done.stderr
