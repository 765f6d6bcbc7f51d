"""`GET /v1/watch` and `timeos watch`: the SSE stream in-process (the ASGI app driven directly),
a slow reader's drops, a stream outliving the request deadline, shutdown, and the real CLI."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import socket
import subprocess
import textwrap
import threading
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import Daemon as RealDaemon
from harness import _exe, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_daemon_start import connect, running, until

from timeos.cli.client import Client
from timeos.cli.render import watch_line
from timeos.cli.table import View
from timeos.clock import FakeClock
from timeos.daemon.api import build_app
from timeos.daemon.service import Service
from timeos.engine import Limits
from timeos.rules.loader import load_rules
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RULES = """
actions:
  noop:
    command: ["true"]
rules:
  - name: welcome
    on_event: signup
    perform: noop
  - name: later
    on_event: signup
    offset: 1h
    perform: noop
"""


def _service(tmp: Path) -> Service:
    rules = tmp / "rules.yaml"
    rules.write_text(textwrap.dedent(RULES))
    return Service(
        store=SqliteStore(tmp / "t.db"),
        clock=FakeClock(T0),
        rules=load_rules([rules], {}),
        rule_paths=[rules],
        loader=lambda paths: load_rules(paths, {}),
        limits=Limits(),
    )


class Stream:
    """One GET /v1/watch driven through the ASGI interface, as uvicorn would drive it."""

    def __init__(self, service: Service, query: str = "") -> None:
        self.app = build_app(service)
        self.query = query.encode()
        self.sent: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self.gone = asyncio.Event()
        self.gate = asyncio.Event()  # cleared: the client has stopped reading
        self.gate.set()
        self._asked = False

    def start(self) -> asyncio.Task[None]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/v1/watch",
            "raw_path": b"/v1/watch",
            "query_string": self.query,
            "root_path": "",
            "headers": [(b"host", b"timeosd")],
            "client": ("test", 1),
            "server": ("timeosd", 80),
        }
        return asyncio.create_task(self.app(scope, self.receive, self.send))

    async def receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        await self.gate.wait()
        await self.sent.put(message)

    async def head(self) -> dict[str, str]:
        start = await self.sent.get()
        assert start["type"] == "http.response.start" and start["status"] == 200
        opening = await self.sent.get()
        assert opening["body"].startswith(b":")  # a comment: subscribed
        return {k.decode(): v.decode() for k, v in start["headers"]}

    async def events(self, count: int) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        while len(got) < count:
            message = await asyncio.wait_for(self.sent.get(), 10)
            text = message["body"].decode()
            lines = dict(line.split(": ", 1) for line in text.strip().split("\n"))
            data = json.loads(lines["data"])
            assert lines["event"] == data["kind"] and text.endswith("\n\n")
            got.append(data)
        return got


def test_watch_streams_lifecycle_events_as_sse_and_a_client_that_leaves_frees_its_watcher(
    tmp_path,
):
    service = _service(tmp_path)

    async def go() -> None:
        stream = Stream(service)
        task = stream.start()
        headers = await stream.head()
        assert headers["content-type"].startswith("text/event-stream")
        assert "content-length" not in headers
        assert len(service.bus.watchers) == 1
        result = service.emit("signup", {"user": "1"})
        got = await stream.events(5)
        assert [(e["kind"], e["rule"]) for e in got] == [
            ("event.emitted", None),
            ("rule.matched", "welcome"),
            ("job.created", "welcome"),
            ("rule.matched", "later"),
            ("job.created", "later"),
        ]
        assert {e["event_id"] for e in got} == {result.event_id}
        assert [e["job_id"] for e in got if e["kind"] == "job.created"] == list(result.job_ids)
        assert all(e["at"] == "2026-03-02T09:00:00+00:00" for e in got)
        stream.gone.set()  # the client closes its connection
        await asyncio.wait_for(task, 10)
        assert service.bus.watchers == set()

    asyncio.run(go())
    service.store.close()


def test_watch_filters_by_rule_and_type_and_an_unknown_type_is_a_400(tmp_path):
    service = _service(tmp_path)

    async def go() -> None:
        stream = Stream(service, "rule=later&type=job.")
        task = stream.start()
        await stream.head()
        service.emit("signup", {})
        (only,) = await stream.events(1)
        assert (only["kind"], only["rule"]) == ("job.created", "later")
        assert stream.sent.empty()
        stream.gone.set()
        await task
        bad = Stream(service, "type=job.deadd")
        await bad.start()
        start = await bad.sent.get()
        body = await bad.sent.get()
        assert start["status"] == 400
        assert json.loads(body["body"])["error"]["code"] == "usage"

    asyncio.run(go())
    service.store.close()


def test_a_reader_that_stops_reading_never_blocks_publishing_and_learns_what_it_lost(tmp_path):
    service = _service(tmp_path)

    async def go() -> None:
        stream = Stream(service)
        task = stream.start()
        await stream.head()
        stream.gate.clear()  # the client stops reading
        service.bus.publish("job.started", job_id="first")
        await asyncio.sleep(0)  # the stream takes it and blocks sending it
        await asyncio.sleep(0)
        for n in range(1002):  # synchronous: publishing never waits for the reader
            service.bus.publish("job.started", job_id=str(n))
        stream.gate.set()
        got = await stream.events(1002)
        assert got[0]["job_id"] == "first"
        assert [e["job_id"] for e in got[1:1001]] == [str(n) for n in range(1000)]
        assert got[1001]["kind"] == "watch.dropped" and got[1001]["count"] == 2
        stream.gone.set()
        await task

    asyncio.run(go())
    service.store.close()


def test_a_watch_outlives_the_request_deadline_and_shutdown_ends_every_stream_promptly(tmp_path):
    got: list[dict[str, Any]] = []

    async def go() -> float:
        loop = asyncio.get_running_loop()
        async with running(tmp_path, request_timeout=0.3) as daemon:
            client = Client(daemon.socket_path, timeout=10)

            def read() -> None:
                for _, data in client.stream("/v1/watch"):
                    got.append(json.loads(data))

            reader = loop.run_in_executor(None, read)
            await until(lambda: len(daemon.bus.watchers) == 1, "the watcher")
            # A second watcher that never reads a byte of its stream.
            stuck = connect(daemon.socket_path, b"GET /v1/watch HTTP/1.1\r\nHost: x\r\n\r\n")
            await until(lambda: len(daemon.bus.watchers) == 2, "the stuck watcher")
            await asyncio.sleep(0.9)  # three request deadlines, in real time: a real deadline
            daemon.service.emit("e", {})
            await until(lambda: any(e["kind"] == "job.created" for e in got), "the events")
            assert daemon.connections.timed_out == 0
            for _ in range(200):  # 4 MB: the stuck reader's socket and write buffer fill up
                daemon.bus.publish("job.failed", error="x" * 20_000)
            await asyncio.sleep(0.1)
            stopping = loop.time()
        took = loop.time() - stopping
        await asyncio.wait_for(reader, 10)  # the stream ended: the reader's loop returned
        stuck.close()
        return took

    took = asyncio.run(go())
    assert took < 3.0, f"shutdown took {took:.1f}s with open watch streams"
    assert [e["kind"] for e in got[:3]] == ["event.emitted", "rule.matched", "job.created"]


def test_watch_line_names_the_kind_the_ids_and_the_facts_with_times_as_elsewhere():
    event = {
        "kind": "job.failed",
        "at": "2026-03-02T09:00:00+00:00",
        "event_id": None,
        "job_id": "J1",
        "rule": "welcome",
        "attempt": 2,
        "error": "exit 1: no such user",
    }
    on_terminal = watch_line(event, View(tty=True))
    assert on_terminal.startswith("2026-03-02 09:00:00+00:00 job.failed ")
    assert on_terminal.endswith('rule=welcome job=J1 attempt=2 error="exit 1: no such user"')
    assert watch_line(event, View()).startswith("2026-03-02T09:00:00+00:00 job.failed ")


# ---- the real CLI against a real daemon -------------------------------------------------------


def _metric(sock: Path, name: str) -> float:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(sock))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    body = raw.partition(b"\r\n\r\n")[2].decode()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"no {name} in {body}")


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_timeos_watch_prints_events_live_and_exits_0_on_ctrl_c_and_on_shutdown(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(textwrap.dedent(RULES))
    daemon = RealDaemon(tmp_path, rules).start()
    env = {**daemon.env, "TIMEOS_SOCKET": str(daemon.socket), "TZ": "UTC"}

    def watch(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*_exe("timeos"), "watch", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    as_json = watch("--json", "--rule", "welcome")
    readable = watch("--type", "job.", "--utc")
    try:
        wait_until(lambda: _metric(daemon.socket, "timeos_watchers") == 2, what="two watchers")
        event_id = daemon.cli("emit", "signup").stdout.strip()
        json_lines, text_lines = _lines(as_json), _lines(readable)
        got = [json.loads(json_lines.get(timeout=15)) for _ in range(4)]
        assert [e["kind"] for e in got] == [
            "rule.matched",
            "job.created",
            "job.started",
            "job.succeeded",
        ]
        assert all(e["rule"] == "welcome" and e["event_id"] == event_id for e in got)
        assert got[3]["attempt"] == 1 and got[3]["duration_ms"] >= 0
        first = text_lines.get(timeout=15)
        assert " job.created " in first and "rule=" in first and "+00:00" in first
        readable.send_signal(signal.SIGINT)  # Ctrl-C
        assert readable.wait(10) == 0
        daemon.stop()
        assert as_json.wait(10) == 0
        assert as_json.stderr is not None and "ended the stream" in as_json.stderr.read()
    finally:
        for proc in (as_json, readable):
            if proc.poll() is None:
                proc.kill()
        daemon.stop()
