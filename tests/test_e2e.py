"""End to end: a real timeosd on a temporary socket and database, driven by the real CLI."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from harness import Daemon, _exe, cli, wait_until

PY = sys.executable

WRITE_STDIN = """
import os, sys
data = sys.stdin.read()
out = sys.argv[1]
with open(out, "a") as f:
    f.write(os.environ["TIMEOS_RULE"] + " " + os.environ["TIMEOS_ATTEMPT"] + " " + data + "\\n")
"""

FAIL_UNLESS = """
import sys, pathlib
if not pathlib.Path(sys.argv[1]).exists():
    sys.stderr.write("dependency not ready\\n")
    sys.exit(3)
"""

SLOW_ONCE = """
import os, sys, time, pathlib
marker = pathlib.Path(sys.argv[1])
if marker.exists():
    sys.exit(0)
marker.write_text(str(os.getpid()))
time.sleep(120)
"""


def _script(tmp: Path, name: str, body: str) -> str:
    path = tmp / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def _rules(tmp: Path, body: str) -> Path:
    path = tmp / "rules.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def _slow_rules(tmp: Path) -> tuple[Path, Path]:
    """Rules whose `go` job runs SLOW_ONCE: the first run writes its pid to `marker` and hangs."""
    marker = tmp / "started"
    slow = _script(tmp, "slow.py", SLOW_ONCE)
    rules = _rules(
        tmp,
        f"""
        actions:
          slow:
            command: [{json.dumps(PY)}, {json.dumps(slow)}, {json.dumps(str(marker))}]
            timeout: 5m
        rules:
          - name: slow
            on_event: go
            perform: slow
        """,
    )
    return marker, rules


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()


def _basic(tmp: Path) -> Path:
    writer = _script(tmp, "write.py", WRITE_STDIN)
    return _rules(
        tmp,
        f"""
        actions:
          write:
            command: [{json.dumps(PY)}, {json.dumps(writer)}, {json.dumps(str(tmp / "out.txt"))}]
            timeout: 20s
        rules:
          - name: welcome
            on_event: user_signup
            perform: write
          - name: later
            on_event: user_signup
            offset: 1h
            perform: write
          - name: big-payment
            on_event: payment_received
            when: payload.amount > 1000
            perform: write
        """,
    )


def test_emit_runs_a_command_action_that_writes_a_file(tmp_path, daemons):
    d = Daemon(tmp_path, _basic(tmp_path)).start()
    daemons.append(d)
    result = d.cli_json("emit", "user_signup", "--payload", '{"user_id": "123"}')
    assert result["duplicate"] is False and len(result["jobs"]) == 2
    jobs = {j["rule"]: j for j in d.cli_json("jobs", "list", "--event", result["id"])}
    d.wait_job(jobs["welcome"]["id"], "succeeded")
    assert (tmp_path / "out.txt").read_text() == 'welcome 1 {"user_id":"123"}\n'
    assert d.job(jobs["later"]["id"])["status"] == "pending"
    pending = d.cli_json("jobs", "list", "--status", "pending")
    assert [j["rule"] for j in pending] == ["later"]
    for field in (
        "id",
        "rule",
        "action",
        "status",
        "priority",
        "perform_at",
        "attempts",
        "max_attempts",
        "event_id",
        "last_error",
    ):
        assert field in pending[0]
    assert pending[0]["perform_at"].endswith("+00:00")
    plain = d.cli("emit", "user_signup", "--payload", '{"user_id": "9"}')
    assert plain.returncode == 0 and len(plain.stdout.strip()) == 26


def test_event_that_occurred_in_the_past_fires_at_once(tmp_path, daemons):
    d = Daemon(tmp_path, _basic(tmp_path)).start()
    daemons.append(d)
    result = d.cli_json(
        "emit",
        "user_signup",
        "--payload",
        '{"user_id": "1"}',
        "--occurred-at",
        "2020-01-01T00:00:00Z",
    )
    for job_id in result["jobs"]:
        d.wait_job(job_id, "succeeded")
    event = d.cli_json("events", "show", result["id"])
    assert event["occurred_at"] == "2020-01-01T00:00:00+00:00"


def test_condition_decides_whether_a_job_is_created(tmp_path, daemons):
    d = Daemon(tmp_path, _basic(tmp_path)).start()
    daemons.append(d)
    assert len(d.cli_json("emit", "payment_received", "--payload", '{"amount": 1500}')["jobs"]) == 1
    assert d.cli_json("emit", "payment_received", "--payload", '{"amount": 10}')["jobs"] == []
    assert d.cli_json("emit", "payment_received", "--payload", '{"other": 1}')["jobs"] == []


def test_idempotency_key(tmp_path, daemons):
    d = Daemon(tmp_path, _basic(tmp_path)).start()
    daemons.append(d)
    args = ("emit", "user_signup", "--payload", '{"user_id": "1"}', "--idempotency-key", "k-1")
    first = d.cli_json(*args)
    second = d.cli_json(*args)
    assert second == {
        "id": first["id"],
        "duplicate": True,
        "jobs": [],
        "cancelled": [],
        "debounced": [],
    }
    plain = d.cli(*args)  # without --json: only the id on stdout
    assert plain.stdout.strip() == first["id"] and "duplicate" in plain.stderr
    clash = d.cli(
        "emit", "user_signup", "--payload", '{"user_id": "2"}', "--idempotency-key", "k-1"
    )
    assert clash.returncode == 1
    assert "k-1" in clash.stderr and "different" in clash.stderr
    assert len(d.cli_json("events", "list")) == 1


def test_failure_retries_then_dead_letters_then_dlq_retry_succeeds(tmp_path, daemons):
    marker = tmp_path / "ready"
    failing = _script(tmp_path, "fail.py", FAIL_UNLESS)
    rules = _rules(
        tmp_path,
        f"""
        actions:
          flaky:
            command: [{json.dumps(PY)}, {json.dumps(failing)}, {json.dumps(str(marker))}]
        rules:
          - name: flaky
            on_event: go
            perform: flaky
            retry: {{max_attempts: 3, backoff: 1m, max_backoff: 10m}}
        """,
    )
    d = Daemon(tmp_path, rules, fake_clock="2026-03-02T09:00:00Z").start()
    daemons.append(d)
    (job_id,) = d.cli_json("emit", "go")["jobs"]
    d.wait_job(job_id, "retrying")
    d.advance("3m")  # past the first backoff (1m +/- 20% jitter)
    wait_until(lambda: d.job(job_id)["attempts"] == 2 and d.job(job_id)["status"] == "retrying")
    d.advance("5m")
    job = d.wait_job(job_id, "dead")
    assert job["attempts"] == 3
    assert "exit status 3" in job["last_error"] and "dependency not ready" in job["last_error"]
    assert [j["id"] for j in d.cli_json("dlq", "list")] == [job_id]
    marker.write_text("ok")
    retried = d.cli_json("dlq", "retry", job_id)
    assert retried["status"] in ("pending", "running", "succeeded")
    job = d.wait_job(job_id, "succeeded")
    history = d.cli_json("jobs", "show", job_id)["attempt_history"]
    assert [a["outcome"] for a in history] == ["failed", "failed", "failed", "succeeded"]
    assert d.cli_json("dlq", "list") == []


def test_kill_9_during_a_running_action_loses_nothing(tmp_path, daemons):
    marker, rules = _slow_rules(tmp_path)
    d = Daemon(tmp_path, rules).start()
    daemons.append(d)
    (job_id,) = d.cli_json("emit", "go")["jobs"]
    wait_until(marker.exists, what="the action to start")
    accepted = d.cli_json("emit", "go", "--payload", '{"n": 2}')  # accepted, then the crash
    d.kill9()
    os.kill(int(marker.read_text()), signal.SIGKILL)  # the orphaned first run
    d2 = Daemon(tmp_path, rules).start()
    daemons.append(d2)
    job = d2.wait_job(job_id, "succeeded")
    assert job["attempts"] == 2
    history = d2.cli_json("jobs", "show", job_id)["attempt_history"]
    assert history[0]["outcome"] == "interrupted"
    assert d2.cli_json("events", "show", accepted["id"])["payload"] == {"n": 2}
    for other in accepted["jobs"]:
        d2.wait_job(other, "succeeded")


def test_broken_rules_on_reload_keep_the_old_rules(tmp_path, daemons):
    rules = _basic(tmp_path)
    d = Daemon(tmp_path, rules).start()
    daemons.append(d)
    good = rules.read_text()
    rules.write_text(good.replace("perform: write", "perform: wirte", 1))
    result = d.cli("reload")
    assert result.returncode == 1
    assert "rules.yaml:" in result.stderr and "wirte" in result.stderr
    assert len(d.cli_json("rules", "list")) == 3
    assert len(d.cli_json("emit", "user_signup", "--payload", "{}")["jobs"]) == 2
    unhealthy = d.cli("health", "--json")
    assert unhealthy.returncode == 1
    assert json.loads(unhealthy.stdout)["components"]["rules"]["status"] == "degraded"
    rules.write_text("")  # a file truncated mid-edit must not drop every rule
    assert d.cli("reload").returncode == 1
    assert len(d.cli_json("rules", "list")) == 3
    rules.write_text(good.replace("offset: 1h", "offset: 2h"))
    assert d.cli_json("reload")["rules"] == 3
    assert d.cli_json("rules", "show", "later")["offset"] == "2h"


def test_sighup_reloads_rules(tmp_path, daemons):
    rules = _basic(tmp_path)
    d = Daemon(tmp_path, rules).start()
    daemons.append(d)
    rules.write_text(rules.read_text().replace("offset: 1h", "offset: 3h"))
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: d.cli_json("rules", "show", "later")["offset"] == "3h")


def test_reload_of_a_module_that_exits_at_import_keeps_the_daemon_and_its_rules(tmp_path, daemons):
    rules = _basic(tmp_path)
    d = Daemon(tmp_path, rules, extra_env={"PYTHONPATH": str(tmp_path)}).start()
    daemons.append(d)
    (tmp_path / "cli_hooks.py").write_text(
        "import argparse\nargparse.ArgumentParser().parse_args(['--nope'])\n"
    )
    good = rules.read_text()
    rules.write_text(good.replace("actions:\n", "actions:\n  hook: {python: 'cli_hooks:run'}\n", 1))
    result = d.cli("reload")
    assert result.returncode == 1
    assert "python 'cli_hooks:run': cannot import 'cli_hooks': SystemExit: 2" in result.stderr
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: d.log.read_text().count("SystemExit: 2") >= 2, what="the SIGHUP reload")
    assert d.proc.poll() is None
    assert len(d.cli_json("rules", "list")) == 3


def test_sigterm_ends_the_daemon_even_with_a_reload_waiting_on_a_slow_import(tmp_path, daemons):
    # A reload request in flight used to keep uvicorn's shutdown waiting for it, with no end:
    # SIGTERM logged "shutting down" and the process stayed until kill -9.
    rules = _basic(tmp_path)
    d = Daemon(tmp_path, rules, extra_env={"PYTHONPATH": str(tmp_path)}).start()
    daemons.append(d)
    started = tmp_path / "import-started"
    (tmp_path / "slow_hooks.py").write_text(
        f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(60)\n"
        "def run(payload, ctx):\n    return None\n"
    )
    good = rules.read_text()
    rules.write_text(
        good.replace("actions:\n", "actions:\n  hook: {python: 'slow_hooks:run'}\n", 1)
    )
    reload = subprocess.Popen(
        [*_exe("timeos"), "--socket", str(d.socket), "reload"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(started.exists, what="the slow import to start")
        assert d.proc is not None
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(20) == 0  # within the request shutdown grace, not after the import
    finally:
        reload.kill()
        reload.wait()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("emit", "x", "--payload", "{bad"), "Error: --payload: invalid JSON at line 1 column 2"),
        (("emit", "x", "--payload", "[1]"), "Error: --payload: must be a JSON object, got list"),
        (("emit", "x", "--occurred-at", "2024-01-01T00:00:00"), "needs a UTC offset or Z"),
        (("emit", "x", "--payload", '{"a":' * 100 + "1" + "}" * 100), "nested 100 levels deep"),
        (("jobs", "show", "NOPE"), "Error: no job with id 'NOPE'"),
        (("events", "show", "NOPE"), "Error: no event with id 'NOPE'"),
        (("emit", "x", "--payload", '{"a": NaN}'), "NaN is not valid JSON"),
        (("emit", "x", "--payload", '{"a": 1e400}'), "out of range"),
        (("emit", "x", "--payload", '{"a": "\\ud800"}'), "lone surrogate"),
        (("emit", "bad type!"), "letters, digits"),
        (("emit", "x", "--occurred-at", "9999-12-31T23:59:59-05:00"), "out of range"),
        (("dlq", "retry", "NOPE"), "Error: no job with id 'NOPE'"),
        (("rules", "show", "nope"), "no rule named 'nope'"),
    ],
    ids=[
        "invalid-json",
        "not-object",
        "naive-time",
        "too-deep",
        "unknown-job",
        "unknown-event",
        "nan",
        "huge-float",
        "surrogate",
        "bad-type",
        "far-future",
        "dlq-unknown",
        "unknown-rule",
    ],
)
def test_bad_input_gets_one_line_error_and_exit_1(tmp_path, daemons, args, message):
    d = Daemon(tmp_path, _basic(tmp_path)).start()
    daemons.append(d)
    result = d.cli(*args)
    assert result.returncode == 1, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_payload_from_file_and_stdin(tmp_path, daemons):
    d = Daemon(tmp_path, _basic(tmp_path)).start()
    daemons.append(d)
    (tmp_path / "p.json").write_text('{"user_id": "file"}')
    a = d.cli_json("emit", "user_signup", "--payload-file", str(tmp_path / "p.json"))
    result = d.cli("emit", "user_signup", "--payload", "-", "--json", stdin='{"user_id": "stdin"}')
    b = json.loads(result.stdout)
    assert d.cli_json("events", "show", a["id"])["payload"] == {"user_id": "file"}
    assert d.cli_json("events", "show", b["id"])["payload"] == {"user_id": "stdin"}


def test_cancel_waiting_jobs(tmp_path, daemons):
    d = Daemon(tmp_path, _basic(tmp_path)).start()
    daemons.append(d)
    emitted = d.cli_json("emit", "user_signup", "--payload", "{}")
    jobs = {j["rule"]: j["id"] for j in d.cli_json("jobs", "list", "--event", emitted["id"])}
    d.wait_job(jobs["welcome"], "succeeded")
    result = d.cli("jobs", "cancel", jobs["later"], jobs["welcome"])
    assert result.returncode == 1
    assert f"{jobs['later']}: cancelled" in result.stdout
    assert "succeeded" in result.stderr
    assert d.job(jobs["later"])["status"] == "cancelled"


def test_cancel_of_more_ids_than_one_request_takes_is_split_by_the_cli(tmp_path, daemons):
    d = Daemon(tmp_path, _basic(tmp_path)).start()
    daemons.append(d)
    emitted = d.cli_json("emit", "user_signup", "--payload", "{}")
    later = next(
        j["id"]
        for j in d.cli_json("jobs", "list", "--event", emitted["id"])
        if j["rule"] == "later"
    )
    unknown = [f"NOPE{i:05d}" for i in range(2500)]
    result = d.cli("jobs", "cancel", *unknown, later, "--json")
    assert result.returncode == 1, result.stderr
    results = json.loads(result.stdout)
    assert [r["id"] for r in results] == [*unknown, later]
    assert results[-1]["cancelled"] is True
    assert d.job(later)["status"] == "cancelled"


def test_unreachable_daemon_exits_3_and_names_the_socket(tmp_path):
    sock = tmp_path / "none.sock"
    result = cli("status", "--socket", str(sock))
    assert result.returncode == 3
    assert str(sock) in result.stderr and "timeosd" in result.stderr


def test_empty_option_values_are_judged_like_typer_would(tmp_path):
    result = cli("emit", "x", "--payload-file", "", "--socket", str(tmp_path / "none.sock"))
    assert result.returncode == 1 and "--payload-file" in result.stderr


def test_usage_error_exits_2(tmp_path):
    assert cli("emit").returncode == 2
    assert cli("jobs", "list", "--limit", "abc").returncode == 2


def test_socket_is_not_world_accessible_and_status_reports(tmp_path, daemons):
    d = Daemon(tmp_path, _basic(tmp_path)).start()
    daemons.append(d)
    mode = stat.S_IMODE(d.socket.stat().st_mode)
    assert mode == 0o660
    assert not stat.S_IMODE(d.socket.parent.stat().st_mode) & 0o002
    status = d.cli_json("status")
    assert status["up"] is True and status["rules"] == 3 and status["socket"] == str(d.socket)
    health = d.cli_json("health")
    assert health["status"] == "healthy"
    assert set(health["components"]) >= {"database", "rules", "scheduler", "workers"}
    assert "pending" in health["jobs"]
    explicit = cli("status", "--json", "--socket", str(d.socket))
    assert explicit.returncode == 0


def test_openapi_document_is_served(tmp_path, daemons):
    d = Daemon(tmp_path, _basic(tmp_path)).start()
    daemons.append(d)
    doc = d.client.call("GET", "/openapi.json")
    assert "/v1/events" in doc["paths"] and "/v1/jobs" in doc["paths"]


def test_invalid_rules_at_start_exit_nonzero_with_location(tmp_path):
    rules = _rules(tmp_path, "rules:\n  - name: x\n    on_event: a\n    perfrom: b\n")
    d = Daemon(tmp_path, rules).start(expect_ready=False)
    assert d.proc is not None
    assert d.proc.wait(20) != 0
    log = d.log.read_text()
    assert "rules.yaml:4:5" in log and "perform" in log


def test_rules_check_offline(tmp_path):
    good = _basic(tmp_path)
    ok = cli("rules", "check", str(good), "--socket", "/unused.sock")  # accepted everywhere
    assert ok.returncode == 0 and "3 rule(s)" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: x\n    on_event: a\n    perform: nope\n")
    result = cli("rules", "check", str(bad))
    assert result.returncode == 1
    assert "bad.yaml:4:14" in result.stderr and "nope" in result.stderr


RELATIVE = """
actions:
  hello:
    command: ["./hello.sh"]
rules:
  - name: greet
    on_event: go
    perform: hello
"""


def test_a_relative_command_runs_from_its_rules_file_directory_and_a_missing_one_warns(
    tmp_path, daemons
):
    conf = tmp_path / "conf"  # the daemon runs in tmp_path: ./hello.sh is not there
    conf.mkdir()
    out = tmp_path / "out.txt"
    hello = conf / "hello.sh"
    hello.write_text(f'#!/bin/sh\necho "hello $TIMEOS_RULE" >> "{out}"\n')
    hello.chmod(0o755)
    rules = conf / "rules.yaml"
    rules.write_text(RELATIVE)
    d = Daemon(tmp_path, rules).start()
    daemons.append(d)
    (job_id,) = d.cli_json("emit", "go")["jobs"]
    d.wait_job(job_id, "succeeded")
    assert out.read_text() == "hello greet\n"

    rules.write_text(RELATIVE.replace("rules:", '  gone:\n    command: ["./gone.sh"]\nrules:'))
    warning = (
        f"Warning: {rules}:6:15: action 'gone': command './gone.sh' ({conf}/gone.sh) does not exist"
    )
    reload = d.cli("reload")
    assert reload.returncode == 0 and reload.stdout == "reloaded: 1 rule(s)\n"
    assert reload.stderr == warning + "\n"
    check = cli("rules", "check", str(rules))
    assert check.returncode == 0 and "1 rule(s), 2 action(s)" in check.stdout
    assert check.stderr == warning + "\n"
    assert warning.removeprefix("Warning: ") in d.log.read_text()  # the daemon logs it too


def test_emit_action_chains_rules(tmp_path, daemons):
    writer = _script(tmp_path, "write.py", WRITE_STDIN)
    rules = _rules(
        tmp_path,
        f"""
        actions:
          chain:
            emit: second_step
          write:
            command: [{json.dumps(PY)}, {json.dumps(writer)}, {json.dumps(str(tmp_path / "o"))}]
        rules:
          - name: first
            on_event: first_step
            perform: chain
          - name: second
            on_event: second_step
            perform: write
        """,
    )
    d = Daemon(tmp_path, rules).start()
    daemons.append(d)
    d.cli_json("emit", "first_step", "--payload", '{"k": "v"}')
    wait_until(lambda: (tmp_path / "o").exists() and (tmp_path / "o").read_text())
    assert (tmp_path / "o").read_text() == 'second 1 {"k":"v"}\n'
    types = [e["type"] for e in d.cli_json("events", "list")]
    assert types == ["second_step", "first_step"]


def test_sigterm_waits_for_running_actions_then_kills_and_requeues(tmp_path, daemons):
    marker, rules = _slow_rules(tmp_path)
    d = Daemon(tmp_path, rules).start()  # --grace 2s
    daemons.append(d)
    (job_id,) = d.cli_json("emit", "go")["jobs"]
    wait_until(marker.exists, what="the action to start")
    child = int(marker.read_text())
    assert d.stop() == 0
    assert (
        not Path(f"/proc/{child}").exists()
        or "zombie" in Path(f"/proc/{child}/status").read_text().lower()
    )
    assert not d.socket.exists()
    d2 = Daemon(tmp_path, rules).start()
    daemons.append(d2)
    job = d2.wait_job(job_id, "succeeded")
    history = d2.cli_json("jobs", "show", job_id)["attempt_history"]
    assert history[0]["outcome"] == "interrupted" and job["attempts"] == 2


def test_payload_limits_are_configurable(tmp_path, daemons):
    d = Daemon(
        tmp_path,
        _basic(tmp_path),
        extra_args=(
            "--max-payload-bytes",
            "100",
            "--max-payload-depth",
            "3",
            "--max-key-length",
            "5",
        ),
    ).start()
    daemons.append(d)
    big = d.cli("emit", "x", "--payload", json.dumps({"a": "y" * 200}))
    assert big.returncode == 1 and "over the limit of 100 bytes" in big.stderr
    deep = d.cli("emit", "x", "--payload", '{"a": {"b": {"c": {"d": 1}}}}')
    assert deep.returncode == 1 and "nested 4 levels deep, over the limit of 3" in deep.stderr
    key = d.cli("emit", "x", "--idempotency-key", "toolong")
    assert key.returncode == 1 and "idempotency key must be 1..5 characters" in key.stderr
    assert d.cli("emit", "x", "--payload", '{"a": {"b": 1}}').returncode == 0


def test_body_refused_mid_send_shows_the_daemons_error_not_unreachable(tmp_path, daemons):
    d = Daemon(tmp_path, _basic(tmp_path), extra_args=("--max-payload-bytes", "1000")).start()
    daemons.append(d)
    # Under the CLI's 1 MiB cap but far over this daemon's limit and the socket's buffer: timeosd
    # answers 400 and closes while the CLI is still sending.
    (tmp_path / "big.json").write_text(json.dumps({"a": "y" * 900_000}))
    result = d.cli("emit", "x", "--payload-file", str(tmp_path / "big.json"))
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("Error: payload: request of ")
    assert "over the limit" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("jobs", "list", "--status", "sleeping"), "unknown status 'sleeping'"),
        (("jobs", "list", "--limit", "5000"), "limit must be 1..1000"),
    ],
    ids=["bad-status", "limit"],
)
def test_bad_query_values_are_usage_errors(tmp_path, daemons, args, message):
    d = Daemon(tmp_path, _basic(tmp_path)).start()
    daemons.append(d)
    result = d.cli(*args)
    assert result.returncode == 2 and message in result.stderr


def test_hostile_api_bodies_get_400_not_500(tmp_path, daemons):
    d = Daemon(tmp_path, _basic(tmp_path)).start()
    daemons.append(d)
    bodies = [
        b'{"type": "x", "payload": {"a": "\xff"}}',  # not UTF-8
        b'{"type": "x", "payload": {"a": Infinity}}',
        b'{"type": "x", "payload": {"a": ' + b"9" * 5000 + b"}}",  # int over 4300 digits
        b'{"type": "x", "payload": {}, "occurred_at": "0001-01-01T00:00:00+14:00"}',
    ]
    for body in bodies:
        status, _, raw = d.client._exchange(
            b"POST /v1/events HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert status == 400, (body[:60], raw)
        assert json.loads(raw)["error"]["code"] == "invalid_payload"
    assert d.cli_json("events", "list") == []


def test_payload_size_counts_utf8_bytes_not_escapes(tmp_path, daemons):
    d = Daemon(tmp_path, _basic(tmp_path), extra_args=("--max-payload-bytes", "1000")).start()
    daemons.append(d)
    fits = json.dumps({"a": "é" * 450}, ensure_ascii=False)  # 900 UTF-8 bytes, 2.7 KB escaped
    assert d.cli("emit", "x", "--payload", fits).returncode == 0
    too_big = json.dumps({"a": "é" * 600}, ensure_ascii=False)
    result = d.cli("emit", "x", "--payload", too_big)
    assert result.returncode == 1 and "over the limit of 1000 bytes" in result.stderr


def test_second_daemon_on_the_same_database_is_refused_and_harms_nothing(tmp_path, daemons):
    marker, rules = _slow_rules(tmp_path)
    d = Daemon(tmp_path, rules).start()
    daemons.append(d)
    (job_id,) = d.cli_json("emit", "go")["jobs"]
    wait_until(marker.exists, what="the action to start")
    # The same socket is refused before the database is even opened; another socket on the
    # same database is refused by the database lock.
    for other_socket, why in (
        (d.socket, "already listening on"),
        (tmp_path / "other" / "t.sock", "already using the database"),
    ):
        second = Daemon(tmp_path, rules)
        second.socket = other_socket
        second.start(expect_ready=False)
        assert second.proc is not None and second.proc.wait(20) == 2
        assert why in second.log.read_text()
    job = d.job(job_id)
    assert job["status"] == "running" and job["attempts"] == 1
    os.kill(int(marker.read_text()), signal.SIGKILL)
    d.wait_job(job_id, "retrying")


def test_socket_path_that_is_a_regular_file_is_not_replaced(tmp_path):
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    d = Daemon(tmp_path, _basic(tmp_path))
    d.socket = precious
    d.start(expect_ready=False)
    assert d.proc is not None and d.proc.wait(20) == 2
    assert precious.read_text() == "keep me"
    assert "not a socket" in d.log.read_text()


def test_database_files_are_not_world_readable(tmp_path, daemons):
    d = Daemon(tmp_path, _basic(tmp_path)).start()
    daemons.append(d)
    d.cli_json("emit", "user_signup", "--payload", "{}")
    for path in tmp_path.glob("timeos.db*"):
        assert not stat.S_IMODE(path.stat().st_mode) & 0o007, path


def test_python_dash_m_runs_both_programs():
    cli_version = subprocess.run(
        [sys.executable, "-m", "timeos", "--version"], capture_output=True, text=True, timeout=30
    )
    daemon_version = subprocess.run(
        [sys.executable, "-m", "timeos.daemon", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert cli_version.stdout.strip() == "timeos 0.1.0"
    assert daemon_version.stdout.strip() == "timeosd 0.1.0"


def test_a_client_key_shaped_like_an_emit_jobs_key_does_not_dead_letter_it(tmp_path, daemons):
    rules = _rules(
        tmp_path,
        """
        actions:
          chain:
            emit: second_step
          noop:
            command: ["true"]
        rules:
          - name: first
            on_event: first_step
            offset: 1h
            perform: chain
          - name: second
            on_event: second_step
            perform: noop
        """,
    )
    d = Daemon(tmp_path, rules, fake_clock="2026-03-02T09:00:00Z").start()
    daemons.append(d)
    (job_id,) = d.cli_json("emit", "first_step", "--payload", '{"k": "v"}')["jobs"]
    d.cli_json("emit", "other", "--payload", "{}", "--idempotency-key", f"job:{job_id}")
    reserved = d.cli("emit", "other", "--idempotency-key", f"timeos:job:{job_id}")
    assert reserved.returncode == 1 and "reserved" in reserved.stderr
    d.advance("1h")
    d.wait_job(job_id, "succeeded")
    assert [e["type"] for e in d.cli_json("events", "list", "--type", "second_step")] == [
        "second_step"
    ]
