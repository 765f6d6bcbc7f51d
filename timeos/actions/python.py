"""The `python` action: call an already-imported `function(payload, ctx)`.

Plain functions run in a worker thread so they cannot stall the daemon's event loop; coroutine
functions are awaited on the loop itself. A thread outliving its run (timed out) is counted in
Lingering until it ends, so a concurrency limit still counts it as running.
"""

from __future__ import annotations

import asyncio
import inspect
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


async def run_python(
    spec: PythonSpec, ctx: ActionContext, *, output_cap: int, lingering: Lingering | None = None
) -> ActionResult:
    """Call the function once; a returned str becomes the output, an exception a FAILED result.

    On timeout the caller stops waiting, but a thread cannot be killed: a plain function keeps
    running to completion in the background and its result is dropped. It runs in a daemon
    thread of its own, so a stuck function never holds up timeosd's shutdown (asyncio.to_thread
    would: asyncio.run joins the default executor). Coroutine functions are cancelled properly.
    """
    function = spec.function
    try:
        if inspect.iscoroutinefunction(function):
            result = await function(ctx.payload, ctx)
        else:
            key = (ctx.rule, ctx.action)
            result = await _in_daemon_thread(function, lingering, key, ctx.payload, ctx)
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


async def _in_daemon_thread(
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

    def work() -> None:
        try:
            value = function(*args)
        except BaseException as exc:  # handed to the awaiting coroutine, not swallowed
            ok, value = False, exc
        else:
            ok = True
        try:
            loop.call_soon_threadsafe(settle, ok, value)
        except RuntimeError:
            pass  # the loop is gone (daemon shut down): nobody waits for this result

    threading.Thread(target=work, name=f"timeos-python-{function.__name__}", daemon=True).start()
    try:
        return await future
    except asyncio.CancelledError:
        if future.cancelled() and not state["ended"] and lingering is not None:
            state["lingering"] = True  # timed out or shut down: the thread runs on
            lingering.begin(key)
        raise
