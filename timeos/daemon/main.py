"""Composition root of `timeosd`: store + rules + scheduler + actions + API server + signals.

Everything is built here and passed down; nothing below reads settings or the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from email.utils import formatdate
from pathlib import Path
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.server import ServerState

from timeos import __version__
from timeos.actions import ActionContext, ActionRunner
from timeos.clock import Clock, FakeClock, SystemClock
from timeos.daemon import config, logs
from timeos.daemon.activation import inherited_socket
from timeos.daemon.api import build_app
from timeos.daemon.connections import (
    ACCEPT_BURST,
    DEFAULT_REQUEST_TIMEOUT,
    ConnectionGuard,
    connection_limit,
    raise_nofile_limit,
)
from timeos.daemon.http import ListenAddress, TokenGate, bind_tcp, listener
from timeos.daemon.metrics import Metrics
from timeos.daemon.notify import Notifier
from timeos.daemon.planner import OccurrencePlanner
from timeos.daemon.retention import Pruner
from timeos.daemon.scheduler import Scheduler
from timeos.daemon.service import Service
from timeos.daemon.telemetry import EventBus
from timeos.engine import Limits, Retention
from timeos.errors import TimeOSError, UsageError
from timeos.model import JobStatus, RuleSet
from timeos.rules.loader import load_rules
from timeos.store.sqlite.store import SqliteStore
from timeos.timefmt import parse_duration, parse_instant

log = logging.getLogger("timeos.daemon")

REQUEST_SHUTDOWN_GRACE = 5  # seconds in-flight API requests get to finish at shutdown

DEFAULT_WORKERS = 4
DEFAULT_GRACE = 30.0
DEFAULT_MAX_SLEEP = 30.0  # SystemClock's cap on one scheduler sleep
STATUS_EVERY = 30.0  # seconds between STATUS= lines to systemd when it set no watchdog
TICK_MARGIN = timedelta(seconds=30)


class _LiveHeaders(ServerState):
    """uvicorn's shared server state, with a Date header read when a response needs it.

    uvicorn refreshes `default_headers` from its main-loop tick; ours has no tick (see
    `_Server.main_loop`), so the header is formatted on each read instead, once per request.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__()
        self.config = config

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        extra = self.config.encoded_headers
        if not self.config.date_header:
            return extra
        return [(b"date", formatdate(usegmt=True).encode()), *extra]

    @default_headers.setter
    def default_headers(self, value: list[tuple[bytes, bytes]]) -> None:
        pass  # computed on read; uvicorn's own assignment (its tick, which we skip) is moot


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers (the daemon owns SIGTERM/SIGINT/SIGHUP) and
    without its 100 ms tick: at rest the server waits on an event, so it never wakes."""

    def __init__(
        self, config: uvicorn.Config, on_started: Callable[[], None] = lambda: None
    ) -> None:
        self._exit = asyncio.Event()  # before super().__init__, which sets should_exit
        super().__init__(config)
        self.server_state = _LiveHeaders(config)
        self.on_started = on_started

    @property
    def should_exit(self) -> bool:
        return self._exit.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        # Set from Daemon.stop() on the loop (a signal handler added with add_signal_handler).
        if value:
            self._exit.set()
        else:
            self._exit.clear()

    async def main_loop(self) -> None:
        # uvicorn's loop sleeps 100 ms at a time to look at should_exit and refresh the Date
        # header: ten wake-ups a second with nothing to do. We need neither poll (max-requests
        # and callback_notify are not used); shutdown starts the moment should_exit is set.
        await self._exit.wait()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:  # accepting now: the moment to tell systemd we are ready
            self.on_started()


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


def refuse_live_socket(path: Path) -> bool:
    """Refuse a path that is not a socket or that a live daemon listens on; True: a stale
    socket is there (a daemon that died), to be replaced."""
    if path.is_symlink() or (path.exists() and not stat.S_ISSOCK(path.lstat().st_mode)):
        raise UsageError(f"{path} exists and is not a socket; refusing to replace it")
    if not path.exists():
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return True
    else:
        raise UsageError(f"another timeosd is already listening on {path}")
    finally:
        probe.close()


def bind_socket(path: Path) -> socket.socket:
    """Bind the API socket with mode 0660 in a directory we own; refuse if a daemon is live."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    parent = path.parent.stat()
    if parent.st_uid != os.geteuid():
        raise UsageError(f"socket directory {path.parent} is not owned by this user")
    if parent.st_mode & stat.S_IWOTH:
        raise UsageError(f"socket directory {path.parent} is world-writable; use a private one")
    if refuse_live_socket(path):
        path.unlink()  # stale socket from a daemon that died
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
        db_path: Path | str,
        socket_path: Path,
        workers: int,
        grace: float,
        synchronous: str,
        clock: Clock,
        environ: Mapping[str, str],
        limits: Limits,
        max_connections: int | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        http: ListenAddress | None = None,
        http_token: bytes | None = None,
        http_read_only: bool = False,
        notifier: Notifier | None = None,
        listen_socket: socket.socket | None = None,
        retention: Retention | None = None,
    ) -> None:
        self.environ = dict(environ)
        self.http = http  # the optional TCP listener; its port once bound (port 0 picks one)
        self.http_token = http_token
        self.http_read_only = http_read_only
        self.rule_paths = list(rule_paths)
        self.notifier = notifier or Notifier()
        # Socket activation: serve on systemd's socket, named by what it is bound to.
        self.listen_socket = listen_socket
        if listen_socket is not None and isinstance(listen_socket.getsockname(), str):
            socket_path = Path(listen_socket.getsockname())
        self.socket_path = socket_path
        self.clock = clock
        rules = self._load(self.rule_paths)  # before touching the database: fail fast
        if listen_socket is None:
            refuse_live_socket(socket_path)  # a daemon already serving here: create no database
        # A SQLite file is locked (one timeosd per file); a PostgreSQL database is shared.
        self.lock_fd = lock_database(db_path) if isinstance(db_path, Path) else None
        self.store = _open_store(db_path, synchronous, clock, socket_path)
        self.store.start_checkpointer()
        self.runner = ActionRunner(
            environ=self.environ, emitter=self._emit_from_action, python_threads=workers
        )
        # The planner and scheduler read the service's current rules at each pass (after a
        # reload, the new ones): the lambda is resolved then, not now.
        self.bus = EventBus(clock)  # lifecycle events: metrics and `timeos watch` streams
        self.planner = OccurrencePlanner(
            store=self.store,
            rules=lambda: self.service.rules,
            publish=self.bus.publish,
            # A shared database: the planning leader also rescues dead daemons' running jobs.
            rescue=(lambda: self.scheduler.recover()) if isinstance(db_path, str) else None,
        )
        self.pruner = Pruner(
            store=self.store, clock=clock, rules=lambda: self.service.rules, retention=retention
        )
        self.service = Service(
            store=self.store,
            clock=clock,
            rules=rules,
            rule_paths=self.rule_paths,
            loader=self._load,
            limits=limits,
            on_change=self._poke,
            wake_at=self._poke,
            info={
                "version": __version__,
                "pid": os.getpid(),
                "socket": str(socket_path),
                "database": self.store.location,
                "synchronous": self.store.synchronous,  # PostgreSQL: its synchronous_commit
                "workers": workers,
            },
            probes={"scheduler": self._scheduler_health, "workers": self._workers_health},
            schedule=self.planner.describe,
            reloading=self._reloading,
            pruner=self.pruner,
            bus=self.bus,
            metrics=Metrics(
                job_counts=self.store.counts_by_status,
                next_fires=self.planner.next_fires,
                watchers=lambda: len(self.bus.watchers),
            ),
            kill_running=lambda ids: self.scheduler.kill(ids),
        )
        self.scheduler = Scheduler(
            store=self.store,
            clock=clock,
            runner=self.runner,
            rules=lambda: self.service.rules,
            workers=workers,
            grace=grace,
            planner=self.planner,
            heartbeat=self._heartbeat if self.notifier.enabled else None,
            # Only a heartbeat to send is a reason to wake on a period: without systemd an idle
            # loop woke (and ran a pass) every 30 s for nothing.
            heartbeat_every=(self.notifier.watchdog_interval or STATUS_EVERY)
            if self.notifier.enabled
            else None,
            publish=self.bus.publish,
        )
        self.server: _Server | None = None
        self.http_server: _Server | None = None
        nofile = raise_nofile_limit()
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

    def _poke(self, due: datetime | None = None) -> None:
        self.scheduler.poke(due)

    async def _emit_from_action(
        self, event_type: str, payload: Mapping[str, Any], ctx: ActionContext
    ) -> str:
        # Keyed by job id, so a retried emit action never emits its event twice.
        result = self.service.emit_for_job(event_type, payload, ctx.job_id)
        return result.event_id

    def _scheduler_health(self) -> tuple[str, str, dict[str, Any]]:
        status, message = self._scheduler_state()
        tick = self.scheduler.last_tick
        age = (self.clock.now() - tick).total_seconds() if tick is not None else None
        return status, message, {"heartbeat_age_seconds": None if age is None else round(age, 3)}

    def _scheduler_state(self) -> tuple[str, str]:
        if not self.scheduler.loop_alive:
            return "unhealthy", "scheduler loop is not running"
        tick = self.scheduler.last_tick
        if self.scheduler.last_error:
            return "degraded", f"last pass failed: {self.scheduler.last_error}"
        now = self.clock.now()
        if self.scheduler.asleep:
            # Idle, it sleeps until its next deadline (None: until a job or reload pokes it),
            # however far off; late only once it overslept that deadline, e.g. behind a request
            # that holds the event loop.
            due = self.scheduler.asleep_until
            if due is not None and now - due > TICK_MARGIN:
                over = (now - due).total_seconds()
                return "degraded", f"no tick for {over:.0f}s past its deadline {due.isoformat()}"
            return "healthy", f"last tick {tick.isoformat() if tick else 'never'}"
        # In a pass: one that runs much longer than max_sleep means the loop is stuck.
        late = timedelta(seconds=getattr(self.clock, "max_sleep", DEFAULT_MAX_SLEEP)) + TICK_MARGIN
        if tick is not None and now - tick > late:
            age = (self.clock.now() - tick).total_seconds()
            return (
                "degraded",
                f"no tick for {age:.0f}s (expected within {late.total_seconds():.0f}s)",
            )
        return "healthy", f"last tick {tick.isoformat() if tick else 'never'}"

    def _workers_health(self) -> tuple[str, str]:
        # All workers busy is capacity in use, not ill health: a load balancer reading 503 would
        # drop the daemon during any long job. Jobs left waiting show up as `lateness` instead.
        busy = len(self.scheduler.running)
        return "healthy", f"{busy} of {self.scheduler.workers} busy"

    def _status_line(self) -> str:
        """What `systemctl status` shows: rules loaded, jobs waiting and running."""
        rules = len(self.service.rules.rules)
        running = len(self.scheduler.running)
        try:
            waiting = sum(
                self.store.count_jobs(status=s) for s in (JobStatus.PENDING, JobStatus.RETRYING)
            )
        except TimeOSError:  # the database locked or full: still report what we know
            return f"{rules} rule(s), {running} job(s) running, database not answering"
        return f"{rules} rule(s), {waiting} job(s) waiting, {running} running"

    def _heartbeat(self) -> None:
        # From the scheduler loop: a stuck loop sends no WATCHDOG=1, and systemd restarts us.
        self.notifier.heartbeat(self._status_line())

    @contextlib.contextmanager
    def _reloading(self) -> Iterator[None]:
        self.notifier.reloading(int(self.clock.monotonic() * 1_000_000))
        try:
            yield
        except BaseException:
            self.notifier.ready(f"reload rejected, old rules kept; {self._status_line()}")
            raise
        self.notifier.ready(self._status_line())

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
        tcp = bind_tcp(self.http, ACCEPT_BURST) if self.http is not None else None
        try:
            sock = self.listen_socket or bind_socket(self.socket_path)
        except BaseException:
            if tcp is not None:
                tcp.close()
            raise
        # systemd's socket outlives us (it queues clients while we restart): never unlink it.
        bound = None if self.listen_socket else self.socket_path.lstat()
        recovered = self.scheduler.recover()
        # Another daemon on a shared database made a job due: look now (from its thread).
        self.store.watch(lambda: loop.call_soon_threadsafe(self.scheduler.poke))
        app = build_app(self.service, self._extra_routes())
        self.server = _Server(
            self._server_config(app), on_started=lambda: self.notifier.ready(self._status_line())
        )
        serving = [self.server.serve(sockets=[sock])]
        if tcp is not None and self.http is not None:
            # The same app (and connection guard) on TCP, behind the bearer-token gate.
            self.http = ListenAddress(self.http.host, tcp.getsockname()[1])
            # /ui/ (the dashboard, its own login) beside it: on TCP only, the Unix socket is
            # for the CLI.
            # Imported only with a TCP listener: jinja2 and the pages cost ~90 modules.
            from timeos.web.app import Dashboard, WithDashboard

            dashboard = Dashboard(self.service, self.http_token, read_only=self.http_read_only)
            tcp_app = WithDashboard(TokenGate(app, self.http_token), dashboard)
            self.http_server = _Server(self._server_config(tcp_app))
            serving.append(self.http_server.serve(sockets=[tcp]))
        loop.add_signal_handler(signal.SIGTERM, self.stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._reload_signal)
        log.info(
            "timeosd started",
            extra=logs.fields(
                version=__version__,
                rules=len(self.service.rules.rules),
                socket=str(self.socket_path),
                socket_from="systemd" if self.listen_socket else None,
                database=str(self.store.location),
                workers=self.scheduler.workers,
                recovered=recovered or None,
                http=str(self.http) if self.http else None,
                http_token=("required" if self.http_token else "writes refused")
                if self.http
                else None,
                http_read_only=self.http_read_only or None,
                max_connections=self.connections.max_connections,
                request_timeout_s=self.connections.request_timeout,
            ),
        )
        scheduler_task = asyncio.create_task(self.scheduler.run(), name="scheduler")
        pruner_task = asyncio.create_task(self.pruner.run(), name="retention")
        try:
            await asyncio.gather(*serving)
        finally:
            if not self.scheduler.stopping:  # the server ended on its own, not by stop()
                self.notifier.stopping()
            self.scheduler.stop()
            self.pruner.stop()
            await scheduler_task
            await pruner_task
            await self.runner.aclose()
            if bound is not None:
                remove_socket(self.socket_path, bound)
            self.store.close()
            log.info("timeosd stopped")

    def _server_config(self, app: Any) -> uvicorn.Config:
        return uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            http=self.connections.protocol(),  # one guard: the cap counts both listeners
            ws="none",
            backlog=ACCEPT_BURST,  # also how many connections asyncio accepts per wake-up
            # A request still in flight at shutdown (a reload waiting on a slow import) is
            # cancelled after this, so SIGTERM always ends the daemon within its grace.
            timeout_graceful_shutdown=REQUEST_SHUTDOWN_GRACE,
        )

    def stop(self, why: str = "stop") -> None:
        """Begin graceful shutdown: stop claiming, stop serving, drain running actions."""
        log.info("shutting down", extra=logs.fields(signal=why))
        self.notifier.stopping()
        self.scheduler.stop()
        self.bus.close()  # end `timeos watch` streams, or uvicorn would wait for them forever
        for server in (self.server, self.http_server):
            if server is not None:
                server.should_exit = True

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


def _open_store(db: Path | str, synchronous: str, clock: Clock, socket_path: Path) -> SqliteStore:
    """The store `--db` names: a SQLite file, or a PostgreSQL URL
    (shared: this daemon is known there by its host and socket, the same after a restart)."""
    if isinstance(db, str):
        from timeos.store.postgres.store import PostgresStore

        return PostgresStore(db, clock=clock, daemon_id=f"{socket.gethostname()}:{socket_path}")
    return SqliteStore(db, synchronous=synchronous, clock=clock)


def _clock_from(environ: Mapping[str, str]) -> Clock:
    fake = environ.get("TIMEOS_FAKE_CLOCK")
    if fake:
        return FakeClock(parse_instant(fake, "TIMEOS_FAKE_CLOCK"))
    return SystemClock()


def serve(**given: Any) -> None:
    """Run the TimeOS daemon: load rules, run the scheduler, serve the API on a Unix socket.

    Settings come from flags, then TIMEOS_* variables, then /etc/timeos/timeosd.yaml (or
    --config), then defaults; --print-config shows each one and where it came from.

    Example: timeosd --rules rules.example.yaml --db ./timeos.db --socket ./timeos.sock
    """
    if given["version"]:
        print(f"timeosd {__version__}")
        return
    # A SIGHUP during start-up (a reload sent too early) must not kill us before the handler
    # that reloads is installed.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    environ = os.environ
    try:
        settings = config.resolve(given, environ, config.config_path(given["config"], environ))
    except UsageError as exc:
        for line in exc.message.splitlines():
            print(f"timeosd: error: {line}", file=sys.stderr)
        sys.exit(2)
    if given["print_config"]:
        print(json.dumps(settings.describe(), indent=2) if given["json"] else settings.render())
        return
    redact = logs.Redactor()
    logs.configure(settings["log-level"], settings["log-format"], redact=redact)
    try:
        # Both take their variables out of the environment: actions never inherit them.
        notifier = Notifier.from_environ(environ, os.getpid())
        listen_socket = inherited_socket(environ, os.getpid())
        address: ListenAddress | None = settings["http"]
        for warning in config.needing_http(settings):
            log.warning(warning)
        token = listener(address, settings["http-token-file"]) if address else None
        daemon = Daemon(
            rule_paths=settings["rules"],
            db_path=settings["db"],
            socket_path=settings["socket"],
            workers=settings["workers"],
            grace=settings["grace"].total_seconds(),
            synchronous=settings["synchronous"],
            clock=_clock_from(environ),
            environ=environ,
            limits=Limits(
                max_payload_bytes=settings["max-payload-bytes"],
                max_payload_depth=settings["max-payload-depth"],
                max_idempotency_key=settings["max-key-length"],
            ),
            max_connections=settings["max-connections"],
            request_timeout=settings["request-timeout"].total_seconds(),
            http=address,
            http_token=token,
            http_read_only=settings["http-read-only"],
            notifier=notifier,
            listen_socket=listen_socket,
            retention=Retention(events=settings["keep-events"], jobs=settings["keep-jobs"]),
        )
        redact.source = lambda: daemon.service.rules.secrets  # the loaded rules' ${VAR} values
        asyncio.run(daemon.run())
    except TimeOSError as exc:
        print(f"timeosd: error: {exc.message}", file=sys.stderr)
        sys.exit(exc.exit_code)


def quick_options(argv: Sequence[str]) -> dict[str, Any] | None:
    """serve()'s keyword arguments from a well-formed command line; None: "let typer do it".

    typer (with click and rich) costs timeosd ~100 modules and start-up time for a parse that
    argparse does with what the daemon already loads. Anything else (help, a bad or unknown
    flag, a value argparse would take differently) goes to the typer app in
    daemon/options.py, which stays the one source of usage text and usage errors.
    """
    if any(a in ("-h", "--help", "--") for a in argv):
        return None
    import argparse

    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False, allow_abbrev=False)
    for setting in config.SETTINGS:
        if setting.switch:  # absent is None (not False), so the env and file still count
            parser.add_argument(setting.flag, action="store_const", const=True, default=None)
        else:
            parser.add_argument(setting.flag, action="append" if setting.many else "store")
    parser.add_argument("--config")
    for flag in ("--print-config", "--json", "--version"):
        parser.add_argument(flag, action="store_true")
    try:
        args, rest = parser.parse_known_args(list(argv))
    except (argparse.ArgumentError, SystemExit):
        return None
    given = vars(args)
    if rest or any(v == "" or (isinstance(v, str) and v.startswith("-")) for v in _values(given)):
        return None  # an empty value or one that looks like a flag: typer judges those
    for setting in config.SETTINGS:
        if setting.many:  # as click hands a repeatable option over
            given[setting.attr] = tuple(given[setting.attr] or ())
    return given


def _values(given: Mapping[str, Any]) -> Iterator[Any]:
    for value in given.values():
        yield from value if isinstance(value, list) else [value]


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point for `timeosd`."""
    given = quick_options(sys.argv[1:] if argv is None else argv)
    if given is None:
        from timeos.daemon.options import app

        app(args=None if argv is None else list(argv))
        return
    try:
        serve(**given)
    except KeyboardInterrupt:  # as click reports it
        print("\nAborted!", file=sys.stderr)
        sys.exit(1)


def __getattr__(name: str) -> Any:
    if name == "app":  # the typer app, for tests and --help; built on first use
        from timeos.daemon.options import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()


__all__ = ["Daemon", "bind_socket", "main", "timedelta"]
