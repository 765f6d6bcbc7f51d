"""The `command` action: run an argv without a shell in its own process group, payload on stdin.

Everything about child processes lives here: spawning, bounded output capture, and making sure
nothing a run started outlives it (timeout, cancellation, grandchildren holding the pipes).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
from collections.abc import Mapping, Sequence

from timeos.actions.context import ActionContext, decode, describe, payload_json
from timeos.model import ActionResult, CommandSpec, Outcome

PIPE_GRACE = 0.5  # seconds the pipes may stay open after the main process exited
KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL when a run is stopped early
STDERR_TAIL = 2048  # bytes of stderr quoted in the error of a failed run
EXIT_POLL = 0.1  # seconds between checks for the main process's exit while pipes stay open
_CHUNK = 65536

# Failures to start the program that no retry can fix: the rule names something unrunnable.
_PERMANENT_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOEXEC, errno.ENOTDIR}


class _Tail:
    """The last `cap` bytes written to it."""

    def __init__(self, cap: int) -> None:
        self.cap = max(cap, 0)
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        """Append `chunk`, dropping the oldest bytes beyond the cap."""
        self.data += chunk
        if len(self.data) > self.cap:
            del self.data[: len(self.data) - self.cap]


# All a command inherits from the daemon's environment: enough to find programs and pick a locale.
# The rest (tokens meant for http headers, the service manager's variables) stays in the daemon;
# an action passes what it needs by name under `env:`.
INHERITED_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")


def command_env(
    environ: Mapping[str, str], ctx: ActionContext, extra: Sequence[tuple[str, str]] = ()
) -> dict[str, str]:
    """Build a run's environment: INHERITED_VARIABLES, the action's `env:`, the TIMEOS_* ones."""
    return {
        **{name: environ[name] for name in INHERITED_VARIABLES if name in environ},
        **dict(extra),
        "TIMEOS_JOB_ID": ctx.job_id,
        "TIMEOS_RULE": ctx.rule,
        "TIMEOS_ACTION": ctx.action,
        "TIMEOS_EVENT_ID": ctx.event_id or "",
        "TIMEOS_EVENT_TYPE": ctx.event_type or "",
        "TIMEOS_ATTEMPT": str(ctx.attempt),
        "TIMEOS_SCHEDULED_FOR": ctx.scheduled_for.isoformat(),
    }


async def run_command(
    spec: CommandSpec,
    ctx: ActionContext,
    *,
    environ: Mapping[str, str],
    output_cap: int,
    kill_grace: float = KILL_GRACE,
) -> ActionResult:
    """Run `spec.argv` once; when cancelled (timeout, shutdown) kill its group and re-raise."""
    if not spec.argv:
        return ActionResult(Outcome.PERMANENT, "command has an empty argv")
    program = spec.argv[0]
    stdin_data = payload_json(ctx.payload)
    spawn = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=command_env(environ, ctx, spec.env),
            start_new_session=True,  # own process group: one killpg reaches every descendant
        )
    )
    try:
        # Shielded: cancelling a spawn midway kills only the main process (asyncio closes the
        # transport), and whatever it already forked would escape; finish it, then kill the group.
        proc = await asyncio.shield(spawn)
    except OSError as exc:
        return _spawn_failure(program, exc)
    except asyncio.CancelledError:
        await _abandon(spawn, kill_grace)
        raise

    pgid = proc.pid  # a new session's leader: its pid is the group id
    stdout, stderr = _Tail(output_cap), _Tail(output_cap)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    readers = [
        asyncio.create_task(_drain(proc.stdout, stdout)),
        asyncio.create_task(_drain(proc.stderr, stderr)),
    ]
    feeder = asyncio.create_task(_feed(proc.stdin, stdin_data))
    try:
        try:
            returncode = await _wait_exit(proc)
            # A grandchild that inherited stdout/stderr keeps them open after the main process
            # exited; give it a moment to finish writing, then the finally below kills it.
            await asyncio.wait(readers, timeout=PIPE_GRACE)
        except BaseException:
            await _stop(proc, pgid, kill_grace)
            raise
    finally:
        # The run owns its group: sweep whatever is left so no orphan outlives the job.
        _signal_group(pgid, signal.SIGKILL)
        await _settle([*readers, feeder])
    return _result(returncode, stdout, stderr)


def _spawn_failure(program: str, exc: OSError) -> ActionResult:
    if isinstance(exc, FileNotFoundError):
        return ActionResult(Outcome.PERMANENT, f"command not found: {program!r}")
    if isinstance(exc, PermissionError):
        return ActionResult(Outcome.PERMANENT, f"command not executable: {program!r}")
    if exc.errno in _PERMANENT_ERRNOS:
        return ActionResult(Outcome.PERMANENT, f"cannot run {program!r}: {exc.strerror}")
    # e.g. EAGAIN/ENOMEM: the machine is short of processes or memory; trying later may work.
    return ActionResult(Outcome.FAILED, f"cannot start {program!r}: {describe(exc)}")


def _result(returncode: int, stdout: _Tail, stderr: _Tail) -> ActionResult:
    output = decode(bytes(stdout.data))
    errors = decode(bytes(stderr.data)) or None  # kept whole (up to the cap), success or not
    if returncode == 0:
        return ActionResult(Outcome.SUCCEEDED, None, output, stderr=errors)
    if returncode < 0:
        try:
            what = f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            what = f"killed by signal {-returncode}"
    else:
        what = f"exit status {returncode}"
    tail = decode(bytes(stderr.data[-STDERR_TAIL:])).strip()
    return ActionResult(Outcome.FAILED, f"{what}: {tail}" if tail else what, output, stderr=errors)


async def _wait_exit(proc: asyncio.subprocess.Process) -> int:
    """Return the main process's exit status without waiting for its pipes to close."""
    # On Python < 3.12, Process.wait() also waits for every pipe to close (gh-119710), so a
    # grandchild holding stdout would hang it; `returncode` is set as soon as the child is reaped.
    waiter = asyncio.ensure_future(proc.wait())
    try:
        while (returncode := proc.returncode) is None:
            await asyncio.wait([waiter], timeout=EXIT_POLL)
    finally:
        waiter.cancel()
    return returncode


async def _abandon(spawn: asyncio.Future[asyncio.subprocess.Process], grace: float) -> None:
    """Wait for a spawn whose run was cancelled, then stop whatever it started."""
    try:
        proc = await spawn
    except (OSError, ValueError):  # Popen's own errors: nothing was started
        return
    await _stop(proc, proc.pid, grace)


async def _stop(proc: asyncio.subprocess.Process, pgid: int, grace: float) -> None:
    """SIGTERM the group, give the main process `grace` seconds, then SIGKILL the group."""
    try:
        if proc.returncode is None:
            _signal_group(pgid, signal.SIGTERM)
            await asyncio.wait_for(_wait_exit(proc), grace)
    except TimeoutError:
        pass
    finally:
        _signal_group(pgid, signal.SIGKILL)
    if proc.returncode is None:
        # Wait for the child watcher to reap it: a stopped run leaves no zombie behind, and the
        # event loop may close right after (shutdown) without losing track of the process.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_wait_exit(proc), grace)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    if pgid <= 1:  # never signal our own group or every process we may reach
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


async def _settle(tasks: list[asyncio.Task[None]]) -> None:
    """Let the I/O tasks see EOF after the group was killed; cancel any that still hang."""
    try:
        pending = [t for t in tasks if not t.done()]
        if pending:
            # Only a process that left the group (setsid) could still hold a pipe open now.
            await asyncio.wait(pending, timeout=PIPE_GRACE)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _drain(stream: asyncio.StreamReader, sink: _Tail) -> None:
    # Keep reading past the cap so the child never blocks on a full pipe.
    while chunk := await stream.read(_CHUNK):
        sink.add(chunk)


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    try:
        stdin.write(data)
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command is free not to read its input
    finally:
        stdin.close()
