"""The layer contract (docs/architecture.md), checked on the source so the picture cannot drift.

Every `import` counts, also those inside functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "timeos"

GROUND = ("timeos.errors", "timeos.clock", "timeos.model", "timeos.timefmt", "timeos.payload")
CORE = ("timeos.time", "timeos.rules", "timeos.engine")
ADAPTERS = ("timeos.store", "timeos.actions")
ENTRY = ("timeos.daemon", "timeos.cli", "timeos.web", "timeos.paths", "timeos.__main__")

# What each layer may import from inside timeos (besides itself).
ALLOWED: dict[str, tuple[str, ...]] = {
    "ground": GROUND,
    "core": GROUND + CORE,
    "adapter": GROUND + CORE + ADAPTERS,
}
# Foreign modules that mean I/O, real time, a database or the network.
IO_MODULES = (
    "sqlite3",
    "sqlite_utils",
    "httpx",
    "httpx2",
    "starlette",
    "uvicorn",
    "socket",
    "subprocess",
    "asyncio",
    "threading",
    "time",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, at any depth."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import"
            yield node.lineno, node.module
            for alias in node.names:  # `from timeos.time import cron` imports timeos.time.cron
                yield node.lineno, f"{node.module}.{alias.name}"


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _layer(module: str) -> str:
    if _within(module, GROUND):
        return "ground"
    if _within(module, CORE):
        return "core"
    if _within(module, ADAPTERS):
        return "adapter"
    assert _within(module, ENTRY) or module == "timeos", f"{module} is in no layer"
    return "entry"


SOURCES = sorted(PACKAGE.rglob("*.py"))
MODULES = {_module_name(p): p for p in SOURCES}


def _is_module(name: str) -> bool:
    return name in MODULES


def _edges() -> Iterator[tuple[str, int, str]]:
    for module, path in MODULES.items():
        for line, target in _imports(path):
            yield module, line, target


def test_every_module_is_in_a_layer():
    for module in MODULES:
        _layer(module)


def test_lower_layers_import_only_what_is_beneath_them():
    offenders = []
    for module, line, target in _edges():
        layer = _layer(module)
        if layer == "entry" or not target.startswith("timeos") or not _is_module(target):
            continue
        if not _within(target, ALLOWED[layer]):
            offenders.append(f"{module}:{line} ({layer}) imports {target}")
    assert offenders == []


# The one exception in the core, with its reason: loading rules imports python actions' modules,
# which is user code that may hang, so the import runs in a thread with a timeout.
CORE_IO_ALLOWED = {("timeos.rules.action_specs", "threading")}


def test_the_ground_floor_and_the_core_do_no_io_and_read_no_clock():
    offenders = [
        f"{module}:{line} imports {target}"
        for module, line, target in _edges()
        if _layer(module) in ("ground", "core")
        and module != "timeos.clock"  # the one module that reads real time
        and (_within(target, IO_MODULES) or target == "timeos.clock")
        and (module, target) not in CORE_IO_ALLOWED
    ]
    assert offenders == []


def test_only_the_store_package_imports_a_database_driver():
    offenders = [
        f"{module}:{line} imports {target}"
        for module, line, target in _edges()
        if _within(target, ("sqlite3", "sqlite_utils", "psycopg", "psycopg_pool"))
        and not _within(module, ("timeos.store",))
    ]
    assert offenders == []


def test_only_the_composition_root_picks_a_store_implementation():
    offenders = [
        f"{module}:{line} imports {target}"
        for module, line, target in _edges()
        if _within(target, ("timeos.store.sqlite", "timeos.store.postgres"))
        and not _within(module, ("timeos.store", "timeos.daemon.main"))
    ]
    assert offenders == []


def test_the_cli_never_imports_the_store_the_daemon_or_the_actions():
    offenders = [
        f"{module}:{line} imports {target}"
        for module, line, target in _edges()
        if _within(module, ("timeos.cli",))
        and _within(target, ("timeos.store", "timeos.daemon", "timeos.actions"))
    ]
    assert offenders == []


def test_the_dashboard_reads_through_the_service_never_the_store_or_the_actions():
    offenders = [
        f"{module}:{line} imports {target}"
        for module, line, target in _edges()
        if _within(module, ("timeos.web",))
        and _within(target, ("timeos.store", "timeos.actions", "timeos.cli"))
    ]
    assert offenders == []


def test_the_daemon_never_imports_the_cli():
    offenders = [
        f"{module}:{line} imports {target}"
        for module, line, target in _edges()
        if _within(module, ("timeos.daemon",)) and _within(target, ("timeos.cli",))
    ]
    assert offenders == []


def test_the_api_talks_only_to_the_service():
    offenders = [
        f"timeos.daemon.api:{line} imports {target}"
        for module, line, target in _edges()
        if module == "timeos.daemon.api"
        and _within(target, ("timeos.store", "timeos.daemon.scheduler", "timeos.daemon.planner"))
    ]
    source = MODULES["timeos.daemon.api"].read_text()
    assert offenders == []
    assert ".store." not in source and "service.store" not in source


def test_no_import_cycle_between_modules():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for path in SOURCES:  # module-level imports only: a cycle there breaks import order
        module = _module_name(path)
        for node in ast.parse(path.read_text()).body:
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            graph[module] |= {n for n in names if n in MODULES and n != module}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # A package's __init__ importing its own submodule is not a cycle worth breaking.
    cycles = [c for c in cycles if not all(p.startswith(c.split(" -> ")[0]) for p in c.split())]
    assert cycles == []


# ---- real time and real waiting ---------------------------------------------------------------

# Calls that read real time or wait for it. Waiting with a zero timeout yields, so it is allowed.
REAL_TIME = {
    "time.time",
    "time.monotonic",
    "time.perf_counter",
    "time.sleep",
    "datetime.now",
    "datetime.utcnow",
    "datetime.today",
    "date.today",
    "asyncio.timeout",
    "asyncio.wait_for",
    "asyncio.sleep",
    "asyncio.wait",
}
# Deadlines on work outside the daemon's own logic run on real time by nature: a child process,
# a thread or SQLite's checkpointer does not run faster on a fake clock. Each is listed here
# with why; everything that decides *when something is due* takes `now` or a Clock.
REAL_TIME_ALLOWED = {
    "timeos/clock.py": "the one module that reads real time",
    "timeos/actions/__init__.py": "an action's own timeout bounds a real process or thread",
    "timeos/actions/command.py": "waits for a child process and its pipes",
    "timeos/daemon/scheduler.py": "shutdown grace for running actions",
}


def _real_time_calls(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("time", "asyncio"):
            for alias in node.names:  # `from time import monotonic` would hide the call
                if f"{node.module}.{alias.name}" in REAL_TIME:
                    yield node.lineno, f"{node.module}.{alias.name}"
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        short = ".".join(name.split(".")[-2:])
        if short not in REAL_TIME:
            continue
        if short == "asyncio.sleep" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and arg.value == 0:
                continue  # a yield to the event loop, not a wait
        yield node.lineno, name


def test_real_time_and_real_waiting_appear_only_where_listed():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {name}()"
        for path in SOURCES
        if str(path.relative_to(ROOT)) not in REAL_TIME_ALLOWED
        for line, name in _real_time_calls(ast.parse(path.read_text()))
    ]
    assert offenders == []


def test_the_real_time_check_catches_what_it_claims():
    probe = ast.parse(
        "import asyncio, time\n"
        "from datetime import datetime\n"
        "async def f():\n"
        "    await asyncio.sleep(0)\n"
        "    await asyncio.sleep(0.5)\n"
        "    async with asyncio.timeout(3): pass\n"
        "    await asyncio.wait_for(g(), 1)\n"
        "    time.monotonic(); datetime.now()\n"
        "from time import perf_counter\n"
    )
    found = sorted(_real_time_calls(probe))
    assert [name for _, name in found] == [
        "asyncio.sleep",
        "asyncio.timeout",
        "asyncio.wait_for",
        "datetime.now",
        "time.monotonic",
        "time.perf_counter",
    ]


def test_the_checkpointer_waits_on_an_event_not_a_sleep():
    # The only other real wait in the package: threading.Event.wait(interval) in the SQLite
    # checkpointer thread, which stop() interrupts at once (between writes it waits on
    # another event, with no timeout at all).
    source = (PACKAGE / "store" / "sqlite" / "connection.py").read_text()
    assert "time.sleep" not in source and "_stop_checkpointer.wait(" in source


# ---- what the offline CLI paths load ----------------------------------------------------------

_PROBE = """
import json, sys
from timeos.cli.entry import main
sys.argv = ["timeos", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
loaded = [m for m in sys.modules if m.split(".")[0] in ("sqlite3", "sqlite_utils", "uvicorn",
          "starlette") or m.startswith(("timeos.store", "timeos.daemon", "timeos.actions"))]
sys.stderr.write("LOADED=" + json.dumps(sorted(loaded)) + "\\n")
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["rules", "check", "rules.example.yaml"],
        ["next", "--cron", "30 2 * * *", "--tz", "America/New_York", "--count", "2"],
        ["next", "weekly-report", "--rules", "rules.example.yaml", "--count", "2"],
    ],
    ids=["rules-check", "next-cron", "next-rule-offline"],
)
def test_offline_cli_paths_import_no_store_no_daemon_and_no_sqlite(argv):
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = [x for x in proc.stderr.splitlines() if x.startswith("LOADED=")]
    assert line, proc.stderr
    assert json.loads(line[0][len("LOADED=") :]) == []
    assert "Traceback" not in proc.stderr, proc.stderr
