"""Composition root of `timeosd`: store + rules + scheduler + actions + API server + signals.

Everything is built here and passed down; nothing below reads settings or the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import resource
import signal
import socket
import stat
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from timeos import __version__, paths
from timeos.actions import ActionContext, ActionRunner
from timeos.clock import Clock, FakeClock, SystemClock
from timeos.daemon import logs
from timeos.daemon.api import build_app
from timeos.daemon.connections import (
    ACCEPT_BURST,
    DEFAULT_REQUEST_TIMEOUT,
    ConnectionGuard,
    connection_limit,
)
from timeos.daemon.metrics import Metrics
from timeos.daemon.planner import OccurrencePlanner
from timeos.daemon.scheduler import Scheduler
from timeos.daemon.service import Service
from timeos.daemon.telemetry import EventBus
from timeos.engine import MAX_IDEMPOTENCY_KEY, MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH, Limits
from timeos.errors import TimeOSError, UsageError
from timeos.model import RuleSet
from timeos.rules.loader import load_rules
from timeos.store.sqlite.store import SqliteStore
from timeos.timefmt import parse_duration, parse_instant

log = logging.getLogger("timeos.daemon")

DEFAULT_WORKERS = 4
DEFAULT_GRACE = 30.0
DEFAULT_MAX_SLEEP = 30.0  # SystemClock's cap on one scheduler sleep
TICK_MARGIN = timedelta(seconds=30)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the daemon owns SIGTERM/SIGINT/SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def lock_database(db_path: Path) -> int:
    """Hold an exclusive flock on the database file itself for our lifetime: one timeosd per file.

    The lock belongs to the file (its inode), not to a name, so a symlink, a hard link or a
    bind mount of the same database meets the same lock. flock and SQLite's own POSIX (fcntl)
    locks are independent on Linux, so this never blocks SQLite; the descriptor stays open
    until the process exits, because closing any descriptor of the file would drop the
    fcntl locks SQLite holds on it.
    """
    db_path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    try:
        fd = os.open(db_path, os.O_RDONLY | os.O_CREAT, 0o640)  # as the store would create it
    except OSError as exc:
        raise UsageError(f"cannot open the database {db_path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        found = os.fstat(fd)
        os.close(fd)
        raise UsageError(
            f"another timeosd is already using the database {db_path} (it holds the lock on "
            f"that file, inode {found.st_ino} on device {found.st_dev}, under whatever name)"
        ) from None
    return fd


def bind_socket(path: Path) -> socket.socket:
    """Bind the API socket with mode 0660 in a directory we own; refuse if a daemon is live."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    parent = path.parent.stat()
    if parent.st_uid != os.geteuid():
        raise UsageError(f"socket directory {path.parent} is not owned by this user")
    if parent.st_mode & stat.S_IWOTH:
        raise UsageError(f"socket directory {path.parent} is world-writable; use a private one")
    if path.is_symlink() or (path.exists() and not stat.S_ISSOCK(path.lstat().st_mode)):
        raise UsageError(f"{path} exists and is not a socket; refusing to replace it")
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale socket from a daemon that died
        else:
            raise UsageError(f"another timeosd is already listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)  # never a moment when the socket is world-accessible
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    sock.listen(ACCEPT_BURST)
    sock.setblocking(False)
    return sock


def remove_socket(path: Path, bound: os.stat_result) -> bool:
    """Unlink `path` only if it is still the socket we bound (same device and inode)."""
    try:
        found = path.lstat()
    except OSError:
        return False
    if (found.st_dev, found.st_ino) != (bound.st_dev, bound.st_ino):
        return False  # another daemon's socket, or a file put there since: not ours to delete
    with contextlib.suppress(OSError):
        path.unlink()
    return True


class Daemon:
    """One running timeosd."""

    def __init__(
        self,
        *,
        rule_paths: Sequence[Path],
        db_path: Path,
        socket_path: Path,
        workers: int,
        grace: float,
        synchronous: str,
        clock: Clock,
        environ: Mapping[str, str],
        limits: Limits,
        max_connections: int | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self.environ = dict(environ)
        self.rule_paths = list(rule_paths)
        self.socket_path = socket_path
        self.clock = clock
        rules = self._load(self.rule_paths)  # before touching the database: fail fast
        self.lock_fd = lock_database(db_path)
        self.store = SqliteStore(db_path, synchronous=synchronous, clock=clock)
        self.store.start_checkpointer()
        self.runner = ActionRunner(environ=self.environ, emitter=self._emit_from_action)
        # The planner and scheduler read the service's current rules at each pass (after a
        # reload, the new ones): the lambda is resolved then, not now.
        self.bus = EventBus(clock)  # lifecycle events: metrics and `timeos watch` streams
        self.planner = OccurrencePlanner(
            store=self.store, rules=lambda: self.service.rules, publish=self.bus.publish
        )
        self.service = Service(
            store=self.store,
            clock=clock,
            rules=rules,
            rule_paths=self.rule_paths,
            loader=self._load,
            limits=limits,
            on_change=self._poke,
            info={
                "version": __version__,
                "pid": os.getpid(),
                "socket": str(socket_path),
                "database": str(db_path),
                "synchronous": synchronous,
                "workers": workers,
            },
            probes={"scheduler": self._scheduler_health, "workers": self._workers_health},
            schedule=self.planner.describe,
            bus=self.bus,
            metrics=Metrics(
                job_counts=self.store.counts_by_status,
                next_fires=self.planner.next_fires,
                watchers=lambda: len(self.bus.watchers),
            ),
        )
        self.scheduler = Scheduler(
            store=self.store,
            clock=clock,
            runner=self.runner,
            rules=lambda: self.service.rules,
            workers=workers,
            grace=grace,
            planner=self.planner,
            publish=self.bus.publish,
        )
        self.server: _Server | None = None
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.connections = ConnectionGuard(
            max_connections=max_connections or connection_limit(nofile, workers),
            request_timeout=request_timeout,
        )
        self._reloads: set[asyncio.Task[None]] = set()

    def _load(self, rule_paths: Sequence[Path]) -> RuleSet:
        rules = load_rules(rule_paths, self.environ)
        for warning in rules.warnings:
            log.warning("%s", warning)
        return rules

    def _poke(self) -> None:
        self.scheduler.poke()

    async def _emit_from_action(
        self, event_type: str, payload: Mapping[str, Any], ctx: ActionContext
    ) -> str:
        # Keyed by job id, so a retried emit action never emits its event twice.
        result = self.service.emit_for_job(event_type, payload, ctx.job_id)
        return result.event_id

    def _scheduler_health(self) -> tuple[str, str]:
        if not self.scheduler.loop_alive:
            return "unhealthy", "scheduler loop is not running"
        tick = self.scheduler.last_tick
        if self.scheduler.last_error:
            return "degraded", f"last pass failed: {self.scheduler.last_error}"
        # The loop ticks at least every max_sleep (a FakeClock: whenever it moves); a tick much
        # older than that means it is stuck, e.g. behind a request that holds the event loop.
        late = timedelta(seconds=getattr(self.clock, "max_sleep", DEFAULT_MAX_SLEEP)) + TICK_MARGIN
        if tick is not None and self.clock.now() - tick > late:
            age = (self.clock.now() - tick).total_seconds()
            return (
                "degraded",
                f"no tick for {age:.0f}s (expected within {late.total_seconds():.0f}s)",
            )
        return "healthy", f"last tick {tick.isoformat() if tick else 'never'}"

    def _workers_health(self) -> tuple[str, str]:
        busy = len(self.scheduler.running)
        status = "degraded" if busy >= self.scheduler.workers else "healthy"
        return status, f"{busy} of {self.scheduler.workers} busy"

    def _extra_routes(self) -> list[Route]:
        clock = self.clock
        if not isinstance(clock, FakeClock):
            return []
        fake = clock

        async def move_clock(request: Request) -> Response:
            body = await request.json()
            if "set" in body:
                fake.set(parse_instant(body["set"], "set"))
            if "advance" in body:
                fake.advance(parse_duration(body["advance"], "advance"))
            self._poke()
            return JSONResponse({"now": fake.now().isoformat()})

        # Only with TIMEOS_FAKE_CLOCK set (tests): lets a test move the daemon's time.
        return [Route("/v1/_test/clock", move_clock, methods=["POST"], include_in_schema=False)]

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT; reload on SIGHUP."""
        loop = asyncio.get_running_loop()
        sock = bind_socket(self.socket_path)
        bound = self.socket_path.lstat()
        recovered = self.scheduler.recover()
        app = build_app(self.service, self._extra_routes())
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            http=self.connections.protocol(),
            ws="none",
            backlog=ACCEPT_BURST,  # also how many connections asyncio accepts per wake-up
        )
        self.server = _Server(config)
        loop.add_signal_handler(signal.SIGTERM, self.stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._reload_signal)
        log.info(
            "timeosd %s: %d rule(s), socket %s, database %s, %d worker(s)%s",
            __version__,
            len(self.service.rules.rules),
            self.socket_path,
            self.store.location,
            self.scheduler.workers,
            f", {recovered} interrupted job(s) recovered" if recovered else "",
        )
        log.info(
            "up to %d connection(s) at once, %gs to send a request",
            self.connections.max_connections,
            self.connections.request_timeout,
        )
        scheduler_task = asyncio.create_task(self.scheduler.run(), name="scheduler")
        try:
            await self.server.serve(sockets=[sock])
        finally:
            self.scheduler.stop()
            await scheduler_task
            await self.runner.aclose()
            remove_socket(self.socket_path, bound)
            self.store.close()
            log.info("timeosd stopped")

    def stop(self, why: str = "stop") -> None:
        """Begin graceful shutdown: stop claiming, stop serving, drain running actions."""
        log.info("%s received: shutting down", why)
        self.scheduler.stop()
        self.bus.close()  # end `timeos watch` streams, or uvicorn would wait for them forever
        if self.server is not None:
            self.server.should_exit = True

    def _reload_signal(self) -> None:
        # The load runs off the loop; keep a reference so the task is not collected mid-reload.
        task = asyncio.get_running_loop().create_task(self._reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self) -> None:
        try:
            await self.service.reload()
        except TimeOSError:
            pass  # already logged by Service.reload; old rules stay active


def _clock_from(environ: Mapping[str, str]) -> Clock:
    fake = environ.get("TIMEOS_FAKE_CLOCK")
    if fake:
        return FakeClock(parse_instant(fake, "TIMEOS_FAKE_CLOCK"))
    return SystemClock()


app = typer.Typer(add_completion=False, rich_markup_mode=None)


@app.command()
def serve(
    rules: Annotated[
        list[Path] | None,
        typer.Option("--rules", help="Rules file or directory (repeatable). Env: TIMEOS_RULES."),
    ] = None,
    db: Annotated[
        Path | None, typer.Option("--db", help="SQLite database file. Env: TIMEOS_DB.")
    ] = None,
    socket_path: Annotated[
        Path | None, typer.Option("--socket", help="Unix socket to serve on. Env: TIMEOS_SOCKET.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help=f"Actions run at once. Env: TIMEOS_WORKERS [default {DEFAULT_WORKERS}].",
        ),
    ] = None,
    grace: Annotated[
        str, typer.Option("--grace", help="Shutdown grace period for running actions.")
    ] = "30s",
    synchronous: Annotated[
        str,
        typer.Option(
            "--synchronous",
            help="SQLite durability: NORMAL survives a crash of timeosd; FULL survives power loss.",
        ),
    ] = "NORMAL",
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug|info|warning|error")
    ] = "info",
    max_payload_bytes: Annotated[
        int, typer.Option("--max-payload-bytes", min=1, help="Largest accepted payload.")
    ] = MAX_PAYLOAD_BYTES,
    max_payload_depth: Annotated[
        int, typer.Option("--max-payload-depth", min=1, help="Deepest accepted payload nesting.")
    ] = MAX_PAYLOAD_DEPTH,
    max_key_length: Annotated[
        int, typer.Option("--max-key-length", min=1, help="Longest accepted idempotency key.")
    ] = MAX_IDEMPOTENCY_KEY,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Run the TimeOS daemon: load rules, run the scheduler, serve the API on a Unix socket.

    Example: timeosd --rules rules.example.yaml --db ./timeos.db --socket ./timeos.sock
    """
    if version:
        print(f"timeosd {__version__}")
        return
    # A SIGHUP during start-up (a reload sent too early) must not kill us before the handler
    # that reloads is installed.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if synchronous.upper() not in ("NORMAL", "FULL"):
        print(f"timeosd: error: --synchronous {synchronous!r}: use NORMAL or FULL", file=sys.stderr)
        raise typer.Exit(2)
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        print(
            f"timeosd: error: --log-level {log_level!r}: use debug, info, warning or error",
            file=sys.stderr,
        )
        raise typer.Exit(2)
    environ = os.environ
    logs.configure(log_level)
    env_workers = environ.get("TIMEOS_WORKERS")
    if env_workers is not None and (not env_workers.isdigit() or int(env_workers) < 1):
        print(
            f"timeosd: error: TIMEOS_WORKERS={env_workers!r} must be a whole number >= 1",
            file=sys.stderr,
        )
        raise typer.Exit(2)
    try:
        daemon = Daemon(
            rule_paths=rules or paths.default_rules(environ),
            db_path=db or paths.default_db(environ),
            socket_path=socket_path or paths.default_socket(environ),
            workers=workers or int(env_workers or DEFAULT_WORKERS),
            grace=parse_duration(grace, "--grace").total_seconds(),
            synchronous=synchronous,
            clock=_clock_from(environ),
            environ=environ,
            limits=Limits(
                max_payload_bytes=max_payload_bytes,
                max_payload_depth=max_payload_depth,
                max_idempotency_key=max_key_length,
            ),
        )
        asyncio.run(daemon.run())
    except TimeOSError as exc:
        print(f"timeosd: error: {exc.message}", file=sys.stderr)
        raise typer.Exit(exc.exit_code) from None


def main() -> None:
    """Console-script entry point for `timeosd`."""
    app()


if __name__ == "__main__":
    main()


__all__ = ["Daemon", "bind_socket", "main", "timedelta"]
