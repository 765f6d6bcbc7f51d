"""The daemon's log filter: the same line at most a few times per interval, with a count."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from harness import Daemon

from timeos.daemon.logs import LineFormatter, Redactor, RepeatFilter, fields, journal_stream


class Ticks:
    """A hand-wound monotonic clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(msg: str, *args: object, name: str = "asyncio") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_a_flood_of_one_line_is_held_back_and_counted_when_shown_again() -> None:
    ticks = Ticks()
    only = RepeatFilter(interval=10, burst=2, monotonic=ticks)
    shown = [only.filter(_record("socket.accept() out of system resource")) for _ in range(1000)]
    assert shown[:3] == [True, True, False] and sum(shown) == 2
    ticks.now = 10
    again = _record("socket.accept() out of system resource")
    assert only.filter(again)
    assert again.getMessage() == "socket.accept() out of system resource (repeated 998 times)"


def test_different_lines_and_loggers_are_not_held_back() -> None:
    only = RepeatFilter(interval=10, burst=1, monotonic=Ticks())
    assert all(only.filter(_record("job %s failed", n)) for n in range(100))
    assert only.filter(_record("same", name="a")) and only.filter(_record("same", name="b"))


def test_a_line_repeated_after_a_quiet_interval_carries_no_count() -> None:
    ticks = Ticks()
    only = RepeatFilter(interval=10, burst=1, monotonic=ticks)
    assert only.filter(_record("reload rejected"))
    ticks.now = 30
    record = _record("reload rejected")
    assert only.filter(record) and record.getMessage() == "reload rejected"


# ---- the line format --------------------------------------------------------------------------

T = datetime(2026, 3, 2, 9, 0, 0, 250_000, tzinfo=UTC).timestamp()


def _line(msg: str, level: int = logging.INFO, exc: bool = False, **values: object):
    record = logging.LogRecord("timeos.scheduler", level, __file__, 1, msg, None, None)
    record.created = T
    record.__dict__.update(fields(**values))
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            record.exc_info = sys.exc_info()
    return record


def test_a_text_line_has_its_time_with_offset_and_key_value_fields() -> None:
    record = _line(
        "job finished", job_id="J1", rule="r", attempt=2, duration_ms=15, event_id=None,
        error="HTTP 500: it broke", ok=True,
    )  # fmt: skip
    assert LineFormatter().format(record) == (
        "2026-03-02T09:00:00.250+00:00 INFO timeos.scheduler: job finished job_id=J1 rule=r "
        'attempt=2 duration_ms=15 error="HTTP 500: it broke" ok=true'
    )


def test_a_json_line_is_one_object_with_ts_level_logger_msg_and_the_fields() -> None:
    line = LineFormatter("json").format(_line("job finished", logging.ERROR, True, job_id="J1"))
    assert "\n" not in line
    body = json.loads(line)
    assert body.pop("exc").endswith("RuntimeError: boom")
    assert body == {
        "ts": "2026-03-02T09:00:00.250+00:00",
        "level": "error",
        "logger": "timeos.scheduler",
        "msg": "job finished",
        "job_id": "J1",
    }


def test_journald_priorities_prefix_every_line_only_when_stderr_is_the_journal(
    tmp_path: Path,
) -> None:
    with open(tmp_path / "stderr", "w") as stream:
        found = os.fstat(stream.fileno())
        assert journal_stream({"JOURNAL_STREAM": f"{found.st_dev}:{found.st_ino}"}, stream)
        assert not journal_stream({"JOURNAL_STREAM": f"{found.st_dev}:{found.st_ino + 1}"}, stream)
        assert not journal_stream({}, stream)
    lines = LineFormatter(journal=True).format(_line("failed", logging.ERROR, True)).splitlines()
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    assert LineFormatter(journal=True).format(_line("tick", logging.DEBUG)).startswith("<7>2026")
    assert LineFormatter(journal=True).format(_line("up")).startswith("<6>2026")


def test_lines_that_differ_only_in_their_fields_are_not_held_back() -> None:
    only = RepeatFilter(interval=10, burst=1, monotonic=Ticks())
    assert all(only.filter(_line("job finished", job_id=f"J{n}")) for n in range(50))
    assert not only.filter(_line("job finished", job_id="J1"))


def test_known_secrets_are_replaced_in_the_message_the_fields_and_tracebacks() -> None:
    redact = Redactor(lambda: {"hunter2-token", "ab"})
    record = _line("sent hunter2-token", logging.ERROR, error="Bearer hunter2-token", n="ab")
    record.exc_info = (RuntimeError, RuntimeError("hunter2-token"), None)
    for style in ("text", "json"):
        line = LineFormatter(style, redact=redact).format(record)
        assert "hunter2" not in line and line.count("***") == 3
        assert "ab" in line  # too short to be a secret: blanking it would garble every line


def test_secrets_that_change_are_hidden_from_the_next_line_on() -> None:
    secrets = {"first-secret"}
    redact = Redactor(lambda: secrets)  # the rules' set: a reload swaps it, or it grows
    assert redact("a first-secret b") == "a *** b"
    secrets = {"second-secret"}
    assert redact("first-secret second-secret") == "first-secret ***"
    secrets.add("third-secret")  # the same set, changed in place
    assert redact("second-secret third-secret") == "*** ***"


@pytest.mark.parametrize(
    "shown",
    ["Zm9v%2BYmFy%2Fc2VjcmV0%20x%3D", "Zm9v%2BYmFy/c2VjcmV0%20x%3D", "Zm9v%2BYmFy%2Fc2VjcmV0+x%3D"],
    ids=["quote", "quote-path", "quote-plus"],
)
def test_a_secret_is_hidden_in_the_forms_a_url_carries_it(shown) -> None:
    # httpx logs the request URL at INFO: `?token=${QTOK}` reached the log percent-encoded.
    redact = Redactor(lambda: {"Zm9v+YmFy/c2VjcmV0 x="})
    line = LineFormatter("text", redact=redact).format(_line(f"POST http://h/x?token={shown}"))
    assert "c2VjcmV0" not in line and "***" in line


# ---- end to end -------------------------------------------------------------------------------

SECRET = "tok-4f9c1e2a7b"


class _Echo(BaseHTTPRequestHandler):
    """Answers 500 with the request's Authorization header in the body: a leaky server."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = f"denied: {self.headers.get('Authorization')}".encode()
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_an_http_actions_header_secret_never_reaches_the_log(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "actions:\n  hook:\n    http:\n"
        f"      url: http://127.0.0.1:{server.server_port}/hook\n"
        "      headers: {Authorization: 'Bearer ${HOOK_TOKEN}'}\n"
        "    retry: {max_attempts: 1}\n"
        "rules:\n  - {name: leaky, on_event: e, perform: hook}\n"
    )
    d = Daemon(
        tmp_path, rules, extra_env={"HOOK_TOKEN": SECRET}, extra_args=("--log-level", "debug")
    )
    try:
        d.start()
        job_id = d.cli_json("emit", "e")["jobs"][0]
        job = d.wait_job(job_id, "dead")
        # The server did echo it; neither the stored error (nor so the watch stream, the API or
        # an on_failure payload) nor the log may carry it.
        assert "denied: Bearer ***" in job["last_error"] and SECRET not in job["last_error"]
    finally:
        d.stop()
        server.shutdown()
    log = d.log.read_text()
    assert SECRET not in log
    finished = next(
        line for line in log.splitlines() if f"job_id={job_id}" in line and "finished" in line
    )
    assert "rule=leaky action=hook" in finished and "attempt=1" in finished
    assert "status=dead" in finished and "duration_ms=" in finished
    assert 'error="HTTP 500: denied: Bearer ***"' in finished
