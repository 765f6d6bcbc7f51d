"""The `python` action: call an already-imported `function(payload, ctx)`.

Plain functions run on a pool of persistent worker threads (ThreadPool) so they cannot stall the
daemon's event loop; coroutine functions are awaited on the loop itself. A thread outliving its
run (timed out) is counted in Lingering until it ends, so a concurrency limit still counts it as
running.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import queue
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from timeos.actions.context import ActionContext, describe
from timeos.model import ActionResult, Outcome, PythonSpec


class Lingering:
    """Threads of plain functions still running after their run ended (timed out, cancelled),
    by (rule, action): a thread cannot be killed, so a concurrency limit counts them until they
    end. `on_end` is told when one does (the scheduler: a slot may be free)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.on_end: Callable[[], None] | None = None

    def begin(self, key: tuple[str, str]) -> None:
        self.counts[key] += 1

    def end(self, key: tuple[str, str]) -> None:
        self.counts[key] -= 1
        if self.counts[key] <= 0:
            del self.counts[key]
        if self.on_end is not None:
            self.on_end()


class ThreadPool:
    """Persistent daemon threads that make the calls of plain python functions.

    Starting a thread per run cost the event loop a quarter of its time under load
    (`Thread.start` blocks until the new thread runs). Up to `size` idle threads wait for
    work; a call that finds none idle starts another, never waits for one: a stuck function
    holds its thread for good, and the pool must not make other runs queue behind it. A thread
    that finishes a call when `size` others are already idle ends. Every thread is a daemon
    thread and nothing joins them (concurrent.futures would, at exit): a stuck function never
    holds up timeosd's shutdown.
    """

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting in _calls.get(), less the calls already queued
        self.alive = 0  # threads serving now (idle or busy)
        self.started = 0  # threads started since the pool was made

    def submit(self, work: Callable[[], Any], deliver: Callable[[bool, Any], None]) -> None:
        """Call `work()` on an idle thread (a new one if none is idle), then `deliver(ok, value)`
        on that thread: True and what it returned, or False and what it raised."""
        call = (work, deliver)
        with self._lock:
            spawn = self._idle == 0
            if spawn:
                self.alive += 1
                self.started += 1
                number = self.started
            else:
                self._idle -= 1  # that idle thread is reserved for this call
        if not spawn:
            self._calls.put(call)
            return
        # The first call goes in with the thread: if the thread cannot start, nothing is left
        # queued to run later behind the caller's back.
        thread = threading.Thread(
            target=self._serve, args=(call,), name=f"timeos-python-{number}", daemon=True
        )
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self.alive -= 1
            raise

    def _serve(self, call: _Call) -> None:
        while True:
            work, deliver = call
            try:
                value, ok = work(), True
            except BaseException as exc:  # the caller's to judge, not this thread's end
                value, ok = exc, False
            # Idle again before the result is handed over: the run that the result lets the
            # scheduler start next finds this thread waiting instead of starting another.
            with self._lock:
                leaving = self._idle >= self.size
                if leaving:
                    self.alive -= 1
                else:
                    self._idle += 1
            try:
                deliver(ok, value)
            except BaseException:  # delivery reports its own errors; the thread serves on
                pass
            if leaving:
                return
            call = self._calls.get()


_Call = tuple[Callable[[], Any], Callable[[bool, Any], None]]


async def run_python(
    spec: PythonSpec,
    ctx: ActionContext,
    *,
    output_cap: int,
    pool: ThreadPool,
    lingering: Lingering | None = None,
) -> ActionResult:
    """Call the function once; a returned str becomes the output, an exception a FAILED result.

    On timeout the caller stops waiting, but a thread cannot be killed: a plain function keeps
    running to completion in the background and its result is dropped. It runs on one of the
    pool's daemon threads, so a stuck function never holds up timeosd's shutdown
    (asyncio.to_thread would: asyncio.run joins the default executor). Coroutine functions are
    cancelled properly.
    """
    function = spec.function
    try:
        if inspect.iscoroutinefunction(function):
            result = await function(ctx.payload, ctx)
        else:
            key = (ctx.rule, ctx.action)
            result = await _in_pool(pool, function, lingering, key, ctx.payload, ctx)
            if inspect.isawaitable(result):  # e.g. a functools.partial of a coroutine function
                result = await result
    except (Exception, SystemExit, KeyboardInterrupt) as exc:
        # User code: whatever it raises is this run's failure. SystemExit (a library calling
        # sys.exit(), argparse at run time) and KeyboardInterrupt would otherwise leave the
        # scheduler's task and stop the event loop, i.e. the whole daemon. CancelledError is
        # not caught: that is our own timeout or shutdown.
        return ActionResult(Outcome.FAILED, describe(exc))
    output = result[:output_cap] if isinstance(result, str) else None
    return ActionResult(Outcome.SUCCEEDED, None, output)


async def _in_pool(
    pool: ThreadPool,
    function: Callable[..., Any],
    lingering: Lingering | None,
    key: tuple[str, str],
    *args: Any,
) -> Any:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    state = {"ended": False, "lingering": False}

    def settle(ok: bool, value: Any) -> None:
        state["ended"] = True
        if future.cancelled():  # the run was given up on: its thread ends only now
            if state["lingering"] and lingering is not None:
                lingering.end(key)
        elif not future.done():
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def work() -> Any:
        # A fresh context per run, as a new thread had: a context variable one run sets is not
        # seen by the next run on the same pool thread.
        return contextvars.Context().run(function, *args)

    def deliver(ok: bool, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(settle, ok, value)
        except RuntimeError:
            pass  # the loop is gone (daemon shut down): nobody waits for this result

    pool.submit(work, deliver)
    try:
        return await future
    except asyncio.CancelledError:
        if future.cancelled() and not state["ended"] and lingering is not None:
            state["lingering"] = True  # timed out or shut down: the thread runs on
            lingering.begin(key)
        raise
