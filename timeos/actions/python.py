"""The `python` action: call an already-imported `function(payload, ctx)`.

Plain functions run in a worker thread so they cannot stall the daemon's event loop; coroutine
functions are awaited on the loop itself.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import Any

from timeos.actions.context import ActionContext, describe
from timeos.model import ActionResult, Outcome, PythonSpec


async def run_python(spec: PythonSpec, ctx: ActionContext, *, output_cap: int) -> ActionResult:
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
            result = await _in_daemon_thread(function, ctx.payload, ctx)
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


async def _in_daemon_thread(function: Callable[..., Any], *args: Any) -> Any:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
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
    return await future
