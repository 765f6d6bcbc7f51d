"""Service on a real store: reload contains what user code does at import, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from timeos.actions import ActionRunner
from timeos.clock import FakeClock
from timeos.daemon.scheduler import Scheduler
from timeos.daemon.service import Service
from timeos.engine import Limits
from timeos.errors import RulesError
from timeos.model import Action, ActionKind, EventTrigger, PythonSpec, Rule, RuleSet
from timeos.rules.loader import load_rules
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _old_rules(calls: list[str]) -> RuleSet:
    def record(payload, ctx):
        calls.append(ctx.job_id)

    act = Action("act", ActionKind.PYTHON, PythonSpec("t:record", record))
    return RuleSet((Rule("r", EventTrigger("e"), "act"),), {"act": act})


def _service(tmp: Path, rules: RuleSet, import_timeout: float) -> Service:
    """A Service whose reload reads tmp/rules.yaml with python actions importable from tmp."""
    return Service(
        store=SqliteStore(tmp / "t.db"),
        clock=FakeClock(T0),
        rules=rules,
        rule_paths=[tmp / "rules.yaml"],
        loader=lambda paths: load_rules(paths, {}, import_timeout=import_timeout),
        limits=Limits(),
    )


def _new_rules(tmp: Path, module: str, body: str) -> None:
    (tmp / f"{module}.py").write_text(textwrap.dedent(body))
    (tmp / "rules.yaml").write_text(
        f"actions:\n  hook: {{python: '{module}:run'}}\n"
        "rules:\n  - {name: new, on_event: e, perform: hook}\n"
    )


def _release(fifo: Path) -> None:
    """Let a reader blocked on `fifo` go: open it for writing and close it (EOF)."""
    with contextlib.suppress(OSError):  # ENXIO: nobody is reading it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


async def _until(predicate, what: str) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize(
    ("body", "raised"),
    [
        ("import argparse\nargparse.ArgumentParser().parse_args(['--nope'])\n", "SystemExit: 2"),
        ("raise SystemExit(3)\n", "SystemExit: 3"),
        ("raise KeyboardInterrupt\n", "KeyboardInterrupt"),
    ],
    ids=["argparse-at-import", "sys-exit", "keyboard-interrupt"],
)
def test_reload_of_a_module_that_exits_at_import_is_rejected_and_keeps_the_old_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, raised: str
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    module = f"timeos_test_exiting_{abs(hash(body))}"
    _new_rules(tmp_path, module, body)
    old = _old_rules([])
    service = _service(tmp_path, old, import_timeout=10)

    async def go() -> RulesError:
        with pytest.raises(RulesError) as caught:
            await service.reload()
        return caught.value

    error = asyncio.run(go())
    assert f"rules.yaml:2:18: action 'hook': python '{module}:run': cannot import" in error.message
    assert f"'{module}': {raised}" in error.message
    assert service.rules is old
    assert service.health()["components"]["rules"]["status"] == "degraded"
    service.store.close()


def test_reload_of_a_module_that_hangs_at_import_times_out_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    _new_rules(tmp_path, "timeos_test_hangs_forever", f"open({str(gate)!r}).read()\n")
    old = _old_rules([])
    service = _service(tmp_path, old, import_timeout=0.2)

    async def go() -> RulesError:
        with pytest.raises(RulesError) as caught:
            await service.reload()
        return caught.value

    try:
        error = asyncio.run(go())
    finally:
        _release(gate)
    assert "import of module 'timeos_test_hangs_forever' timed out after 0.2s" in error.message
    assert error.message.startswith(f"{tmp_path / 'rules.yaml'}:2:18: action 'hook'")
    assert service.rules is old
    service.store.close()


def test_scheduler_and_api_keep_working_while_a_reload_waits_on_a_slow_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    gate, started = tmp_path / "gate", tmp_path / "started"
    os.mkfifo(gate)
    module = "timeos_test_slow_import"
    _new_rules(
        tmp_path,
        module,
        f"""
        import pathlib
        pathlib.Path({str(started)!r}).touch()
        open({str(gate)!r}).read()
        def run(payload, ctx):
            pass
        """,
    )
    calls: list[str] = []
    service = _service(tmp_path, _old_rules(calls), import_timeout=30)
    runner = ActionRunner(environ={}, emitter=None)  # type: ignore[arg-type]
    scheduler = Scheduler(
        store=service.store, clock=service.clock, runner=runner, rules=lambda: service.rules
    )
    service.on_change = scheduler.poke

    async def go() -> None:
        loop_task = asyncio.create_task(scheduler.run())
        reload = asyncio.create_task(service.reload())
        await _until(started.exists, "the import to begin")
        # The import is stuck in user code; the loop still serves emits and runs jobs.
        result = service.emit("e", {})
        await _until(lambda: calls == list(result.job_ids), "the job to run")
        assert service.status()["reloads"] == 0 and not reload.done()
        _release(gate)
        rules = await reload
        assert [r.name for r in rules.rules] == ["new"]
        scheduler.stop()
        await loop_task
        await runner.aclose()

    try:
        asyncio.run(go())
    finally:
        _release(gate)
    assert service.reloads == 1
    service.store.close()
