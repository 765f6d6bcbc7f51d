"""ActionRunner against real subprocesses, a real HTTP server, real functions and a fake emitter."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest

from timeos.actions import DEADLINE_TICK, ActionContext, ActionRunner
from timeos.actions.command import run_command
from timeos.errors import PayloadError
from timeos.model import (
    Action,
    ActionKind,
    ActionResult,
    ActionSpec,
    CommandSpec,
    EmitSpec,
    HttpSpec,
    Outcome,
    PythonSpec,
)

PY = sys.executable
SCHEDULED = datetime(2025, 3, 10, 9, 30, tzinfo=UTC)
SHORT = timedelta(milliseconds=300)


def make_ctx(payload: Mapping[str, Any] | None = None, **changes: Any) -> ActionContext:
    fields: dict[str, Any] = {
        "job_id": "job_01",
        "rule": "welcome",
        "action": "greet",
        "event_id": "evt_01",
        "event_type": "user.signed_up",
        "attempt": 2,
        "scheduled_for": SCHEDULED,
        "payload": {"user": "ada"} if payload is None else payload,
    }
    fields.update(changes)
    return ActionContext(**fields)


KINDS = {
    CommandSpec: ActionKind.COMMAND,
    HttpSpec: ActionKind.HTTP,
    PythonSpec: ActionKind.PYTHON,
    EmitSpec: ActionKind.EMIT,
}


def make_action(spec: ActionSpec, timeout: timedelta = timedelta(seconds=10)) -> Action:
    return Action(name="greet", kind=KINDS[type(spec)], spec=spec, timeout=timeout)


@dataclass
class FakeEmitter:
    """Records emitted events; raises `error` instead when set."""

    error: Exception | None = None
    calls: list[tuple[str, Mapping[str, Any], ActionContext]] = field(default_factory=list)

    async def __call__(
        self, event_type: str, payload: Mapping[str, Any], ctx: ActionContext
    ) -> str:
        if self.error is not None:
            raise self.error
        self.calls.append((event_type, payload, ctx))
        return f"evt_{len(self.calls)}"


def run(
    action: Action,
    ctx: ActionContext | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    emitter: FakeEmitter | None = None,
    output_cap: int = 65536,
) -> ActionResult:
    async def go() -> ActionResult:
        runner = ActionRunner(
            environ=dict(os.environ) if environ is None else environ,
            emitter=emitter or FakeEmitter(),
            output_cap=output_cap,
        )
        try:
            return await runner.run(action, ctx or make_ctx())
        finally:
            await runner.aclose()

    return asyncio.run(go())


def command(*argv: str, timeout: timedelta = timedelta(seconds=10)) -> Action:
    return make_action(CommandSpec(argv=argv), timeout)


def python_script(code: str, *args: str, timeout: timedelta = timedelta(seconds=10)) -> Action:
    return command(PY, "-c", code, *args, timeout=timeout)


def is_running(pid: int) -> bool:
    """True while `pid` is alive; a zombie (dead, waiting for init to reap it) counts as gone."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    state = stat_line.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


async def wait_gone(pid: int, within: float = 2.0) -> bool:
    """Poll until `pid` stops running (SIGKILL delivery is asynchronous)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while is_running(pid):
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def read_pid(path: Path, within: float = 5.0) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not path.exists() or not path.read_text().strip():
        assert loop.time() < deadline, f"{path} never written"
        await asyncio.sleep(0.01)
    return int(path.read_text())


# ---- command ----------------------------------------------------------------------------------


def test_command_receives_payload_as_json_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    script = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.stdin.read())"
    payload = {"user": "ada", "n": 3, "nested": {"tags": ["a", "é"]}}
    result = run(python_script(script, str(out)), make_ctx(payload))
    assert result == ActionResult(Outcome.SUCCEEDED, None, "")
    assert json.loads(out.read_text()) == payload


def _env_of(spec: CommandSpec, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a command run of `spec` sees (minus what Python itself adds)."""
    result = run(make_action(spec), make_ctx(event_id=None, event_type=None), environ=environ)
    assert result.outcome is Outcome.SUCCEEDED, result
    env = json.loads(result.output or "")
    env.pop("LC_CTYPE", None)  # Python's own locale coercion may add it in the child
    return env


ENV_SCRIPT = ("-c", "import json, os; print(json.dumps(dict(os.environ)))")


def test_command_does_not_inherit_the_daemons_secrets() -> None:
    environ = {
        "PATH": os.environ["PATH"],
        "HOME": "/home/timeos",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "BILLING_TOKEN": "s3cret",
        "AWS_SECRET_ACCESS_KEY": "k3y",
        "TIMEOS_SOCKET": "/run/timeos.sock",
    }
    env = _env_of(CommandSpec((PY, *ENV_SCRIPT)), environ)
    assert {k: v for k, v in env.items() if not k.startswith("TIMEOS_")} == {
        "PATH": os.environ["PATH"],
        "HOME": "/home/timeos",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
    }
    assert "TIMEOS_SOCKET" not in env


def test_command_gets_what_its_action_lists_under_env() -> None:
    spec = CommandSpec((PY, *ENV_SCRIPT), env=(("API_TOKEN", "t0k"), ("LANG", "de_DE.UTF-8")))
    env = _env_of(spec, {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "OTHER": "x"})
    assert env["API_TOKEN"] == "t0k"
    assert env["LANG"] == "de_DE.UTF-8"  # the action's env: wins over the inherited value
    assert "OTHER" not in env


def test_command_gets_the_timeos_run_variables() -> None:
    env = _env_of(CommandSpec((PY, *ENV_SCRIPT)), {"PATH": os.environ["PATH"]})
    assert "HOME" not in env  # only the given environ is passed on, not the test process's
    assert {k: v for k, v in env.items() if k.startswith("TIMEOS_")} == {
        "TIMEOS_JOB_ID": "job_01",
        "TIMEOS_RULE": "welcome",
        "TIMEOS_ACTION": "greet",
        "TIMEOS_EVENT_ID": "",
        "TIMEOS_EVENT_TYPE": "",
        "TIMEOS_ATTEMPT": "2",
        "TIMEOS_SCHEDULED_FOR": "2025-03-10T09:30:00+00:00",
    }


def test_command_nonzero_exit_fails_with_stderr_tail() -> None:
    script = "import sys; sys.stderr.write('x' * 5000 + 'disk full\\n'); print('partial'); exit(3)"
    result = run(python_script(script))
    assert result.outcome is Outcome.FAILED
    assert result.error is not None
    assert result.error.startswith("exit status 3: xxx")
    assert result.error.endswith("disk full")
    assert len(result.error) <= 2048 + len("exit status 3: ")
    assert result.output == "partial\n"


def test_command_killed_by_signal_names_the_signal() -> None:
    result = run(command("sh", "-c", "kill -KILL $$"))
    assert result == ActionResult(Outcome.FAILED, "killed by signal SIGKILL", "")


def test_missing_executable_is_permanent() -> None:
    result = run(command("/nonexistent/timeos-hook", "arg"))
    assert result == ActionResult(
        Outcome.PERMANENT, "command not found: '/nonexistent/timeos-hook'"
    )
    result = run(command("timeos-no-such-program"))
    assert result == ActionResult(Outcome.PERMANENT, "command not found: 'timeos-no-such-program'")


def test_non_executable_file_is_permanent(tmp_path: Path) -> None:
    script = tmp_path / "hook.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    result = run(command(str(script)))
    assert result.outcome is Outcome.PERMANENT
    assert result.error == f"command not executable: {str(script)!r}"


def test_command_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    action = command("sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait", timeout=SHORT)

    async def go() -> tuple[ActionResult, bool]:
        runner = ActionRunner(environ=dict(os.environ), emitter=FakeEmitter())
        result = await runner.run(action, make_ctx())
        return result, await wait_gone(await read_pid(pidfile))

    result, grandchild_gone = asyncio.run(go())
    assert result == ActionResult(Outcome.TIMEOUT, "timed out after 300ms")
    assert grandchild_gone


def test_command_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    spec = CommandSpec(("sh", "-c", f"trap '' TERM; echo $$ > {pidfile}; sleep 30; sleep 30"))

    async def go() -> bool:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await run_command(
                    spec, make_ctx(), environ=os.environ, output_cap=100, kill_grace=0.2
                )
        assert loop.time() - started < 2
        return await wait_gone(await read_pid(pidfile))

    assert asyncio.run(go())


def test_grandchild_holding_the_pipes_does_not_hang_the_run() -> None:
    action = command("sh", "-c", "sleep 30 & echo $!")

    async def go() -> tuple[ActionResult, float, bool]:
        loop = asyncio.get_running_loop()
        runner = ActionRunner(environ=dict(os.environ), emitter=FakeEmitter())
        started = loop.time()
        result = await runner.run(action, make_ctx())
        elapsed = loop.time() - started
        return result, elapsed, await wait_gone(int(result.output or "0"))

    result, elapsed, grandchild_gone = asyncio.run(go())
    assert result.outcome is Outcome.SUCCEEDED
    assert elapsed < 2.0
    assert grandchild_gone


def test_cancelling_a_run_kills_the_group_and_reraises(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    action = command("sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait")

    async def go() -> bool:
        runner = ActionRunner(environ=dict(os.environ), emitter=FakeEmitter())
        task = asyncio.create_task(runner.run(action, make_ctx()))
        pid = await read_pid(pidfile)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await wait_gone(pid)

    assert asyncio.run(go())


def running_with_cmdline(*argv: str) -> list[int]:
    wanted = "".join(f"{arg}\0" for arg in argv).encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == wanted:
                found.append(int(entry.name))
        except OSError:
            pass  # exited while we looked
    return [pid for pid in found if is_running(pid)]


def test_cancelling_at_any_point_of_the_spawn_leaves_no_process() -> None:
    marker = ("sleep", "29.5")  # a cmdline no other test uses
    action = command("sh", "-c", f"{' '.join(marker)} & wait")

    async def go() -> list[int]:
        runner = ActionRunner(environ=dict(os.environ), emitter=FakeEmitter())
        for steps in range(15):  # cancel after 0, 1, 2... trips round the event loop
            task = asyncio.create_task(runner.run(action, make_ctx()))
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await asyncio.sleep(0.2)  # time for an escaped `sh` to fork its `sleep`
        leaked = running_with_cmdline(*marker)
        for pid in leaked:
            os.kill(pid, 9)
        return leaked

    assert asyncio.run(go()) == []


def test_command_output_is_capped_and_keeps_the_tail() -> None:
    script = "import sys; sys.stdout.write('a' * 1048576 + 'END'); sys.stderr.write('e' * 1048576)"
    result = run(python_script(script), output_cap=1000)
    assert result.outcome is Outcome.SUCCEEDED
    assert result.output is not None
    assert len(result.output) <= 1000
    assert result.output.endswith("aEND")


def test_command_that_ignores_a_large_stdin_still_succeeds() -> None:
    payload = {"blob": "z" * 1048576}
    assert run(command("true"), make_ctx(payload)).outcome is Outcome.SUCCEEDED


def test_shell_metacharacters_arrive_verbatim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the child inherits our cwd: a shell would create files here
    nasty = {
        "semicolon": "; rm -rf / ; touch pwned1",
        "subst": "$(touch pwned2)",
        "backtick": "`touch pwned3`",
        "quote": "'\"; echo pwned4 > pwned4",
    }
    script = (
        "import json, sys; print(json.dumps({'stdin': json.load(sys.stdin), 'argv': sys.argv[1:]}))"
    )
    result = run(
        python_script(script, "$(touch pwned5)", "; touch pwned6"),
        make_ctx(nasty, rule="r; touch pwned7"),
    )
    assert result.outcome is Outcome.SUCCEEDED, result
    got = json.loads(result.output or "")
    assert got == {"stdin": nasty, "argv": ["$(touch pwned5)", "; touch pwned6"]}
    assert list(tmp_path.iterdir()) == []


def test_unserializable_payload_becomes_failed_not_a_crash() -> None:
    result = run(command("true"), make_ctx({"when": object()}))
    assert result == ActionResult(
        Outcome.FAILED, "TypeError: Object of type object is not JSON serializable"
    )


def test_kind_that_does_not_match_its_spec_is_permanent() -> None:
    action = Action(name="greet", kind=ActionKind.HTTP, spec=CommandSpec(("true",)))
    result = run(action)
    assert result == ActionResult(
        Outcome.PERMANENT, "action 'greet': kind 'http' does not match its CommandSpec"
    )


# ---- http -------------------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    url: str
    requests: list[Recorded]


ROUTES: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/ok": (200, {}, b"accepted"),
    "/big": (200, {}, b"b" * 1048576),
    "/unavailable": (503, {}, b"<h1>try\n later</h1>"),
    "/empty500": (500, {}, b""),
    "/busy": (429, {"Retry-After": "5"}, b"slow down"),
    "/missing": (404, {}, b"no such hook"),
    "/moved": (301, {"Location": "https://example.com/new"}, b""),
    "/slow": (200, {}, b"late"),  # answers only at teardown
}


@pytest.fixture
def server() -> Iterator[Server]:
    requests: list[Recorded] = []
    release = threading.Event()  # lets /slow handlers return at teardown

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def handle_any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            requests.append(Recorded(self.command, self.path, dict(self.headers.items()), body))
            if self.path == "/slow":
                release.wait(5)
            status, headers, reply = ROUTES[self.path]
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            try:
                self.wfile.write(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading once it had `output_cap` bytes

        do_GET = do_POST = do_PUT = handle_any

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", requests)
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def http(url: str, method: str = "POST", timeout: timedelta = timedelta(seconds=10)) -> Action:
    spec = HttpSpec(url=url, method=method, headers=(("Authorization", "Bearer s3cret"),))
    return make_action(spec, timeout)


def test_http_posts_payload_with_timeos_headers(server: Server) -> None:
    payload = {"user": "ada", "n": 1}
    result = run(http(server.url + "/ok"), make_ctx(payload))
    assert result == ActionResult(Outcome.SUCCEEDED, None, "accepted")
    [request] = server.requests
    assert request.method == "POST"
    assert json.loads(request.body) == payload
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert request.headers["Idempotency-Key"] == "job_01"
    assert {k: v for k, v in request.headers.items() if k.startswith("X-TimeOS-")} == {
        "X-TimeOS-Job-Id": "job_01",
        "X-TimeOS-Rule": "welcome",
        "X-TimeOS-Action": "greet",
        "X-TimeOS-Event-Id": "evt_01",
        "X-TimeOS-Event-Type": "user.signed_up",
        "X-TimeOS-Attempt": "2",
        "X-TimeOS-Scheduled-For": "2025-03-10T09:30:00+00:00",
    }


def test_http_get_sends_no_body(server: Server) -> None:
    result = run(http(server.url + "/ok", method="get"))
    assert result.outcome is Outcome.SUCCEEDED
    [request] = server.requests
    assert request.method == "GET"
    assert request.body == b""
    assert "Content-Type" not in request.headers
    assert request.headers["Idempotency-Key"] == "job_01"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/unavailable", ActionResult(Outcome.FAILED, "HTTP 503: <h1>try later</h1>")),
        ("/empty500", ActionResult(Outcome.FAILED, "HTTP 500: Internal Server Error")),
        (
            "/busy",
            ActionResult(Outcome.FAILED, "HTTP 429: slow down", retry_after=timedelta(seconds=5)),
        ),
        ("/missing", ActionResult(Outcome.PERMANENT, "HTTP 404: no such hook")),
        (
            "/moved",
            ActionResult(
                Outcome.PERMANENT,
                "HTTP 301: redirect to 'https://example.com/new' not followed",
            ),
        ),
    ],
    ids=["503-retryable", "500-empty-body", "429-retryable", "404-permanent", "301-permanent"],
)
def test_http_status_maps_to_outcome(server: Server, path: str, expected: ActionResult) -> None:
    assert run(http(server.url + path)) == expected
    assert len(server.requests) == 1  # in particular, the redirect was not followed


def test_http_success_output_is_capped(server: Server) -> None:
    result = run(http(server.url + "/big"), output_cap=100)
    assert result == ActionResult(Outcome.SUCCEEDED, None, "b" * 100)


def test_http_slow_server_times_out(server: Server) -> None:
    result = run(http(server.url + "/slow", timeout=SHORT))
    assert result == ActionResult(Outcome.TIMEOUT, "timed out after 300ms")


def test_http_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:  # find a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run(http(f"http://127.0.0.1:{port}/hook"))
    assert result.outcome is Outcome.FAILED
    assert result.error is not None and result.error.startswith("ConnectError")


def test_http_unsupported_scheme_is_permanent() -> None:
    result = run(http("ftp://example.com/hook"))
    assert result.outcome is Outcome.PERMANENT
    assert result.error is not None
    assert result.error.startswith("bad request to 'ftp://example.com/hook': UnsupportedProtocol")


def test_runner_uses_but_does_not_close_a_given_client(server: Server) -> None:
    async def go() -> tuple[ActionResult, bool]:
        async with httpx2.AsyncClient(follow_redirects=True) as client:
            runner = ActionRunner(environ={}, emitter=FakeEmitter(), http_client=client)
            result = await runner.run(http(server.url + "/moved"), make_ctx())
            await runner.aclose()
            return result, client.is_closed

    result, closed = asyncio.run(go())
    assert result.outcome is Outcome.PERMANENT  # redirects stay unfollowed whatever the client says
    assert not closed


# ---- python -----------------------------------------------------------------------------------


def test_python_function_gets_payload_and_ctx_in_a_worker_thread() -> None:
    calls: list[tuple[Mapping[str, Any], ActionContext, int]] = []

    def greet(payload: Mapping[str, Any], ctx: ActionContext) -> str:
        calls.append((payload, ctx, threading.get_ident()))
        return f"hello {payload['user']}"

    ctx = make_ctx()
    result = run(make_action(PythonSpec("hooks:greet", greet)), ctx)
    assert result == ActionResult(Outcome.SUCCEEDED, None, "hello ada")
    [(payload, got_ctx, thread_id)] = calls
    assert payload == {"user": "ada"}
    assert got_ctx == ctx
    assert thread_id != threading.get_ident()


def test_python_non_str_return_value_is_ignored() -> None:
    result = run(make_action(PythonSpec("hooks:count", lambda payload, ctx: 42)))
    assert result == ActionResult(Outcome.SUCCEEDED, None, None)


def test_python_exception_fails_with_type_and_message() -> None:
    def broken(payload: Mapping[str, Any], ctx: ActionContext) -> None:
        raise ValueError(f"bad user {payload['user']!r}")

    result = run(make_action(PythonSpec("hooks:broken", broken)))
    assert result == ActionResult(Outcome.FAILED, "ValueError: bad user 'ada'")


def test_python_function_that_raises_timeouterror_is_failed_not_timeout() -> None:
    def slow_upstream(payload: Mapping[str, Any], ctx: ActionContext) -> None:
        raise TimeoutError("upstream took too long")

    result = run(make_action(PythonSpec("hooks:slow", slow_upstream)))
    assert result == ActionResult(Outcome.FAILED, "TimeoutError: upstream took too long")


def test_python_timeout_returns_while_the_thread_runs_on() -> None:
    release = threading.Event()
    finished = threading.Event()

    def stuck(payload: Mapping[str, Any], ctx: ActionContext) -> None:
        release.wait(5)
        finished.set()

    async def go() -> tuple[ActionResult, bool]:
        runner = ActionRunner(environ={}, emitter=FakeEmitter())
        try:
            result = await runner.run(
                make_action(PythonSpec("hooks:stuck", stuck), SHORT), make_ctx()
            )
            return result, finished.is_set()
        finally:
            # the daemon thread is never joined: release it so it finishes in the background
            release.set()

    result, finished_before_timeout = asyncio.run(go())
    assert result == ActionResult(Outcome.TIMEOUT, "timed out after 300ms")
    assert not finished_before_timeout  # the run returned while the thread still ran
    assert finished.wait(5)  # ... and the abandoned call still runs to completion


def _run_through_a_pause(
    function: Any, release: threading.Event, *, release_during_pause: bool
) -> tuple[ActionResult, float]:
    """Run a python action whose loop freezes for 1 s (as under SIGSTOP) 50 ms in."""

    async def go() -> tuple[ActionResult, float]:
        loop = asyncio.get_running_loop()
        runner = ActionRunner(environ={}, emitter=FakeEmitter(), pause_slack=0.1)

        def pause() -> None:
            if release_during_pause:
                release.set()  # the thread finishes while the loop cannot see it
            time.sleep(1.0)  # the injected pause: the event loop does not run
            if not release_during_pause:
                loop.call_later(0.2, release.set)  # it finishes just after the resume

        loop.call_later(0.05, pause)
        started = loop.time()
        try:
            action = make_action(PythonSpec("hooks:paused", function), SHORT)
            return await runner.run(action, make_ctx()), loop.time() - started
        finally:
            await runner.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("during", [True, False], ids=["during-the-pause", "after-the-pause"])
def test_python_action_that_finishes_around_a_daemon_pause_is_not_timed_out(during: bool) -> None:
    release = threading.Event()

    def paused(payload: Mapping[str, Any], ctx: ActionContext) -> str:
        release.wait(10)
        return "done"

    result, _ = _run_through_a_pause(paused, release, release_during_pause=during)
    assert result == ActionResult(Outcome.SUCCEEDED, None, "done")


def test_python_action_still_times_out_when_a_pause_is_not_the_reason() -> None:
    release, never = threading.Event(), threading.Event()

    def stuck(payload: Mapping[str, Any], ctx: ActionContext) -> None:
        never.wait(10)

    try:
        result, elapsed = _run_through_a_pause(stuck, release, release_during_pause=False)
    finally:
        never.set()
    assert result == ActionResult(Outcome.TIMEOUT, "timed out after 300ms")
    assert elapsed < 1.0 + 0.3 + DEADLINE_TICK + 0.5  # pause + budget + one tick after it


def test_python_coroutine_function_is_awaited_on_the_loop() -> None:
    seen: list[int] = []

    async def notify(payload: Mapping[str, Any], ctx: ActionContext) -> str:
        seen.append(threading.get_ident())
        await asyncio.sleep(0)
        return f"notified {ctx.job_id}"

    result = run(make_action(PythonSpec("hooks:notify", notify)))
    assert result == ActionResult(Outcome.SUCCEEDED, None, "notified job_01")
    assert seen == [threading.get_ident()]


def test_python_coroutine_function_is_cancelled_on_timeout() -> None:
    async def hang(payload: Mapping[str, Any], ctx: ActionContext) -> None:
        await asyncio.sleep(30)

    result = run(make_action(PythonSpec("hooks:hang", hang), timeout=SHORT))
    assert result == ActionResult(Outcome.TIMEOUT, "timed out after 300ms")


# ---- emit -------------------------------------------------------------------------------------


def test_emit_passes_event_type_payload_and_ctx() -> None:
    emitter = FakeEmitter()
    ctx = make_ctx({"user": "ada"})
    result = run(make_action(EmitSpec("user.welcomed")), ctx, emitter=emitter)
    assert result == ActionResult(Outcome.SUCCEEDED, None, "emitted evt_1")
    assert emitter.calls == [("user.welcomed", {"user": "ada"}, ctx)]


def test_emit_rejected_by_timeos_is_permanent() -> None:
    emitter = FakeEmitter(error=PayloadError("payload is 2 MiB, over the 1 MiB limit"))
    result = run(make_action(EmitSpec("user.welcomed")), emitter=emitter)
    assert result == ActionResult(Outcome.PERMANENT, "payload is 2 MiB, over the 1 MiB limit")


def test_emit_unexpected_error_is_retryable() -> None:
    emitter = FakeEmitter(error=RuntimeError("database is locked"))
    result = run(make_action(EmitSpec("user.welcomed")), emitter=emitter)
    assert result == ActionResult(Outcome.FAILED, "RuntimeError: database is locked")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "120"}, timedelta(seconds=120)),
        ({"Retry-After": "999999"}, timedelta(days=1)),
        (
            {
                "Retry-After": "Wed, 21 Oct 2026 07:30:00 GMT",
                "Date": "Wed, 21 Oct 2026 07:28:00 GMT",
            },
            timedelta(minutes=2),
        ),
        ({"Retry-After": "Wed, 21 Oct 2026 07:30:00 GMT"}, None),
        ({"Retry-After": "soon"}, None),
        ([(b"Retry-After", b"\xb2")], None),  # latin-1 superscript 2: isdigit(), not a number
        ({"Retry-After": "9" * 5000}, timedelta(days=1)),
        (
            {
                "Retry-After": "Wed, 21 Oct 2026 07:30:00 GMT",
                "Date": "Wed, 21 Oct 2026 07:29:00 -0000",
            },
            timedelta(minutes=1),
        ),
        ({}, None),
    ],
    ids=[
        "seconds",
        "capped",
        "http-date",
        "date-without-Date",
        "garbage",
        "superscript",
        "huge",
        "naive-date",
        "absent",
    ],
)
def test_retry_after_header(headers: Any, expected: timedelta | None) -> None:
    from timeos.actions.http import retry_after

    assert retry_after(httpx2.Headers(headers)) == expected


def _exits(payload: Mapping[str, Any], ctx: ActionContext) -> None:
    raise SystemExit(2)  # e.g. a library calling sys.exit() or argparse failing at run time


async def _exits_async(payload: Mapping[str, Any], ctx: ActionContext) -> None:
    raise SystemExit(2)


def _interrupts(payload: Mapping[str, Any], ctx: ActionContext) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("function", "error"),
    [
        (_exits, "SystemExit: 2"),
        (_exits_async, "SystemExit: 2"),
        (_interrupts, "KeyboardInterrupt"),
    ],
    ids=["sys-exit-in-thread", "sys-exit-on-the-loop", "keyboard-interrupt"],
)
def test_python_action_that_raises_system_exit_fails_the_run_not_the_daemon(function, error):
    result = run(make_action(PythonSpec("hooks:f", function)))
    assert result.outcome is Outcome.FAILED
    assert error in (result.error or "")
