"""The python action's thread pool: threads are kept between runs, a stuck run never makes
another wait, spare threads end, and every thread is a daemon thread nobody joins."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from timeos.actions import ActionContext, ActionRunner
from timeos.actions.python import ThreadPool
from timeos.model import Action, ActionKind, ActionResult, Outcome, PythonSpec

WAIT = 10.0  # seconds a thread may take to get somewhere on a loaded machine (never reached)


def _ctx(n: int = 0) -> ActionContext:
    return ActionContext(
        job_id=f"job_{n}",
        rule="r",
        action="a",
        event_id=None,
        event_type=None,
        attempt=1,
        scheduled_for=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        payload={"n": n},
    )


def _action(function: Callable[..., Any], timeout: timedelta = timedelta(seconds=10)) -> Action:
    return Action("a", ActionKind.PYTHON, PythonSpec("hooks:f", function), timeout=timeout)


def _runner(threads: int) -> ActionRunner:
    return ActionRunner(environ={}, emitter=None, python_threads=threads)  # type: ignore[arg-type]


def _until(predicate: Callable[[], bool], what: str) -> None:
    done = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if predicate():
            return
        done.wait(0.01)  # threads, not the scheduler: real time is what they run in
    raise AssertionError(f"timed out waiting for {what}")


def test_runs_one_after_another_reuse_one_thread() -> None:
    seen: list[int] = []

    def record(payload: Mapping[str, Any], ctx: ActionContext) -> None:
        seen.append(threading.get_ident())

    runner = _runner(4)

    async def go() -> list[ActionResult]:
        return [await runner.run(_action(record), _ctx(n)) for n in range(20)]

    results = asyncio.run(go())
    assert all(r.outcome is Outcome.SUCCEEDED for r in results)
    assert len(seen) == 20 and len(set(seen)) == 1
    assert threading.get_ident() not in seen  # off the event loop's thread
    assert runner.python_pool.started == 1


def test_concurrent_runs_get_a_thread_each_and_the_pool_keeps_them() -> None:
    gate = threading.Barrier(4, timeout=WAIT)  # all four must be running at once to pass it
    seen: set[int] = set()

    def meet(payload: Mapping[str, Any], ctx: ActionContext) -> None:
        gate.wait()
        seen.add(threading.get_ident())

    runner = _runner(4)

    async def go() -> None:
        for _ in range(3):
            ctxs = [_ctx(n) for n in range(4)]
            results = await asyncio.gather(*(runner.run(_action(meet), c) for c in ctxs))
            assert all(r.outcome is Outcome.SUCCEEDED for r in results), results
            # Each thread goes back to waiting after its result is handed over.
            _until(lambda: runner.python_pool._idle == 4, "four idle threads")

    asyncio.run(go())
    assert len(seen) == 4
    assert runner.python_pool.started == 4  # three rounds, the same four threads


def test_a_stuck_run_never_makes_the_next_one_wait() -> None:
    release = threading.Event()

    def stuck(payload: Mapping[str, Any], ctx: ActionContext) -> None:
        release.wait(WAIT)

    def quick(payload: Mapping[str, Any], ctx: ActionContext) -> str:
        return "ran"

    runner = _runner(1)  # one thread kept: the stuck run holds it

    async def go() -> tuple[ActionResult, ActionResult]:
        timed_out = await runner.run(_action(stuck, timedelta(milliseconds=50)), _ctx(1))
        return timed_out, await runner.run(_action(quick), _ctx(2))

    try:
        timed_out, ran = asyncio.run(go())
        assert timed_out.outcome is Outcome.TIMEOUT
        assert ran == ActionResult(Outcome.SUCCEEDED, None, "ran")
        assert runner.python_pool.started == 2
        assert runner.lingering.counts == {("r", "a"): 1}  # the stuck one still counts
    finally:
        release.set()
    # Once the stuck call ends, two threads are idle for a pool of one: the spare one ends.
    _until(lambda: runner.python_pool.alive == 1, "the spare thread to end")


def test_every_pool_thread_is_a_daemon_thread() -> None:
    release = threading.Event()
    threads: list[threading.Thread] = []

    def hold() -> None:
        threads.append(threading.current_thread())
        release.wait(WAIT)

    pool = ThreadPool(2)
    try:
        for _ in range(3):
            pool.submit(hold, lambda ok, value: None)
        _until(lambda: len(threads) == 3, "three calls running")
        assert all(t.daemon for t in threads)  # interpreter exit never waits for them
        assert pool.alive == 3 and pool.started == 3  # over size: never queued behind one
    finally:
        release.set()
    _until(lambda: pool.alive == 2, "the pool back to its size")


def test_a_context_variable_one_run_sets_is_not_seen_by_the_next() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []

    def set_and_read(payload: Mapping[str, Any], ctx: ActionContext) -> None:
        seen.append(var.get())
        var.set(f"run {payload['n']}")

    runner = _runner(1)

    async def go() -> None:
        for n in range(3):
            await runner.run(_action(set_and_read), _ctx(n))

    asyncio.run(go())
    assert runner.python_pool.started == 1  # the same thread each time
    assert seen == ["unset", "unset", "unset"]


def test_a_thread_that_cannot_start_leaves_no_call_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    pool = ThreadPool(1)

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as patch:
        patch.setattr(threading.Thread, "start", refuse)
        with pytest.raises(RuntimeError):
            pool.submit(lambda: calls.append("first"), lambda ok, value: None)
    assert pool.alive == 0
    done = threading.Event()
    pool.submit(lambda: calls.append("second"), lambda ok, value: done.set())
    assert done.wait(WAIT)
    assert calls == ["second"]  # the refused call never runs later behind the caller's back
