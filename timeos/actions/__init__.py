"""Action runners: ActionRunner sends one run to the module for its kind and applies the timeout.

One module per kind (command, http, python, emit); `run` turns every failure into an ActionResult.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx2

from timeos.actions.command import run_command
from timeos.actions.context import ActionContext, Emitter, describe, timeout_message
from timeos.actions.emit import run_emit
from timeos.actions.http import new_client, run_http
from timeos.actions.python import run_python
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


class ActionRunner:
    """Run actions of every kind; holds what runs share (environment, emitter, HTTP client)."""

    def __init__(
        self,
        *,
        environ: Mapping[str, str],
        emitter: Emitter,
        output_cap: int = DEFAULT_OUTPUT_CAP,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        self.environ = dict(environ)
        self.emitter = emitter
        self.output_cap = output_cap
        self._http_client = http_client
        self._owns_http_client = http_client is None  # a client passed in is the caller's to close

    async def run(self, action: Action, ctx: ActionContext) -> ActionResult:
        """Run `action` once within `action.timeout`; never raises for the action's failures."""
        scope = asyncio.timeout(action.timeout.total_seconds())
        try:
            async with scope:
                return await self._dispatch(action, ctx)
        except TimeoutError as exc:
            if scope.expired():
                return ActionResult(Outcome.TIMEOUT, timeout_message(action.timeout))
            return ActionResult(Outcome.FAILED, describe(exc))  # raised by the action itself
        except Exception as exc:  # the daemon must keep serving whatever one run does
            return ActionResult(Outcome.FAILED, describe(exc))

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
            return await run_http(
                self._client(), spec, ctx, output_cap=self.output_cap, timeout=action.timeout
            )
        if action.kind is ActionKind.PYTHON and isinstance(spec, PythonSpec):
            return await run_python(spec, ctx, output_cap=self.output_cap)
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
            self._http_client = new_client()
        return self._http_client
