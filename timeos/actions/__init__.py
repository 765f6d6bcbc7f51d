"""Action runners: ActionRunner sends one run to the module for its kind and applies the timeout.

One module per kind (command, http, python, emit); `run` turns every failure into an ActionResult.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from timeos.actions.command import run_command
from timeos.actions.context import ActionContext, Emitter, describe, timeout_message
from timeos.actions.emit import run_emit
from timeos.actions.python import Lingering, ThreadPool, run_python

if TYPE_CHECKING:
    import httpx2
from timeos.model import (
    Action,
    ActionKind,
    ActionResult,
    CommandSpec,
    EmitSpec,
    HttpSpec,
    Outcome,
    PythonSpec,
)

__all__ = ["DEFAULT_OUTPUT_CAP", "ActionContext", "ActionRunner", "Emitter"]

DEFAULT_OUTPUT_CAP = 65536  # bytes of output kept per run (per stream for commands)
DEADLINE_TICK = 1.0  # seconds: how often a run's deadline looks at the clock
PAUSE_SLACK = 1.0  # seconds a tick may overrun before it counts as a pause of the daemon


class ActionRunner:
    """Run actions of every kind; holds what runs share (environment, emitter, HTTP client)."""

    def __init__(
        self,
        *,
        environ: Mapping[str, str],
        emitter: Emitter,
        output_cap: int = DEFAULT_OUTPUT_CAP,
        http_client: httpx2.AsyncClient | None = None,
        pause_slack: float = PAUSE_SLACK,
        python_threads: int = 4,
    ) -> None:
        self.environ = dict(environ)
        self.emitter = emitter
        self.output_cap = output_cap
        self.pause_slack = pause_slack
        self._http_client = http_client
        self._owns_http_client = http_client is None  # a client passed in is the caller's to close
        # Timed-out python threads still running, by (rule, action): concurrency counts them.
        self.lingering = Lingering()
        # Threads kept for plain python functions: as many as runs the scheduler makes at once.
        self.python_pool = ThreadPool(python_threads)

    async def run(self, action: Action, ctx: ActionContext) -> ActionResult:
        """Run `action` once within `action.timeout`; never raises for the action's failures."""
        task = asyncio.ensure_future(self._dispatch(action, ctx))
        try:
            finished = await self._within(task, action.timeout.total_seconds())
        except BaseException:  # cancelled (shutdown): stop the run too, and let it clean up
            await _cancel(task)
            raise
        if not finished:
            await _cancel(task)
            return ActionResult(Outcome.TIMEOUT, timeout_message(action.timeout))
        try:
            return task.result()
        except Exception as exc:  # the daemon must keep serving whatever one run does
            return ActionResult(Outcome.FAILED, describe(exc))

    async def _within(self, task: asyncio.Future[ActionResult], budget: float) -> bool:
        """Wait up to `budget` seconds of the daemon's running time for `task`; True if done.

        The deadline counts only time the daemon was running: a tick that overran by more than
        `pause_slack` (the process was stopped, the machine suspended) counts as its asked
        length, and a deadline reached in such a tick gets one more tick, so an action that
        finished while the daemon could not notice (its thread or process ended during the
        pause) is judged by its result, not timed out and run again.
        """
        loop = asyncio.get_running_loop()
        used, paused = 0.0, False
        while True:
            left = budget - used
            if (left <= 0 and not paused) or left <= -DEADLINE_TICK:
                return task.done()
            ask = min(DEADLINE_TICK, left) if left > 0 else DEADLINE_TICK
            started = loop.time()
            done, _ = await asyncio.wait({task}, timeout=ask)
            if done:
                return True
            took = loop.time() - started
            paused = took > ask + self.pause_slack
            used += ask if paused else took

    async def aclose(self) -> None:
        """Close the HTTP client if this runner created it."""
        if self._owns_http_client and self._http_client is not None:
            await self._http_client.aclose()
            self._http_client = None

    async def _dispatch(self, action: Action, ctx: ActionContext) -> ActionResult:
        spec = action.spec
        if action.kind is ActionKind.COMMAND and isinstance(spec, CommandSpec):
            return await run_command(spec, ctx, environ=self.environ, output_cap=self.output_cap)
        if action.kind is ActionKind.HTTP and isinstance(spec, HttpSpec):
            # httpx2 and its dependencies (~160 modules, ~10 MB) only once an http action runs.
            from timeos.actions.http import run_http

            return await run_http(
                self._client(), spec, ctx, output_cap=self.output_cap, timeout=action.timeout
            )
        if action.kind is ActionKind.PYTHON and isinstance(spec, PythonSpec):
            return await run_python(
                spec,
                ctx,
                output_cap=self.output_cap,
                pool=self.python_pool,
                lingering=self.lingering,
            )
        if action.kind is ActionKind.EMIT and isinstance(spec, EmitSpec):
            return await run_emit(spec, ctx, emitter=self.emitter)
        return ActionResult(
            Outcome.PERMANENT,
            f"action {action.name!r}: kind {str(action.kind)!r} does not match "
            f"its {type(spec).__name__}",
        )

    def _client(self) -> httpx2.AsyncClient:
        # Created on first use so a daemon without http actions never opens a connection pool.
        if self._http_client is None:
            from timeos.actions.http import new_client

            self._http_client = new_client()
        return self._http_client


async def _cancel(task: asyncio.Future[ActionResult]) -> None:
    """Cancel a run and wait until it has stopped what it started (e.g. a process group)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
