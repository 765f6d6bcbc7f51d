"""Flow control end to end (issue 8): a real timeosd driven by the real `timeos` CLI."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from harness import Daemon

RULES = """
actions:
  noop:
    command: ["true"]
  nap:
    command: ["sleep", "60"]
  fail:
    command: ["false"]
rules:
  - name: welcome
    on_event: user_signup
    offset: 1h
    perform: noop
  - name: big
    on_event: payment
    when: payload.amount > 10
    perform: noop
    offset: 1h
  - name: sleeper
    on_event: nap
    perform: nap
  - name: broken
    on_event: breaks
    perform: fail
    retry: {max_attempts: 1}
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    rules = tmp_path / "rules.yaml"
    rules.write_text(textwrap.dedent(RULES))
    d = Daemon(tmp_path, rules).start()
    yield d
    d.stop()


def _lines(*events: Any) -> str:
    return "".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events)


def test_emit_batch_prints_one_result_per_line_in_input_order(daemon, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(
        _lines(
            {"type": "user_signup", "payload": {"u": 1}, "idempotency_key": "a"},
            {"type": "payment", "payload": {"amount": 5}},
            "",
            {"type": "user_signup", "payload": {"u": 1}, "idempotency_key": "a"},
            {"type": "payment", "payload": {"amount": 50}, "occurred_at": "2026-01-01T00:00Z"},
        )
    )
    results = daemon.cli_json("emit-batch", str(path))
    assert [r["duplicate"] for r in results] == [False, False, True, False]
    assert [len(r["jobs"]) for r in results] == [1, 0, 0, 1]
    assert results[2]["id"] == results[0]["id"]
    people = daemon.cli("emit-batch", "-", stdin=path.read_text())
    assert people.returncode == 0
    assert "0 event(s) stored, 2 duplicate(s)" not in people.stdout  # two unkeyed lines store
    assert "2 event(s) stored, 2 duplicate(s), 1 job(s) created" in people.stdout


def test_emit_batch_with_bad_lines_stores_nothing_and_names_every_bad_line(daemon):
    stdin = _lines(
        {"type": "ok"},
        {"type": "bad type"},
        "not json",
        {"type": "ok", "payload": [1]},
        {"type": "ok", "idempotency_key": "k", "payload": {"a": 1}},
        {"type": "ok", "idempotency_key": "k", "payload": {"a": 2}},
    )
    result = daemon.cli("emit-batch", stdin=stdin)
    assert result.returncode == 1
    for line in (2, 3, 4, 6):
        assert f"line {line}:" in result.stderr
    assert "line 1:" not in result.stderr and "line 5:" not in result.stderr
    assert daemon.cli_json("events", "list") == []


def test_emit_batch_names_the_line_of_a_conflict_only_the_daemon_sees(daemon):
    daemon.cli("emit", "user_signup", "--idempotency-key", "k", "--payload", '{"u": 1}')
    stdin = _lines({"type": "ok"}, {"type": "user_signup", "idempotency_key": "k"})
    result = daemon.cli("emit-batch", stdin=stdin)
    assert result.returncode == 1
    assert "line 2: idempotency key 'k'" in result.stderr
    assert len(daemon.cli_json("events", "list")) == 1


def test_emit_batch_splits_a_file_over_the_request_cap(daemon, tmp_path):
    # 64 x a 200-byte payload limit: each request holds about 12,800 bytes of lines.
    daemon.env["TIMEOS_MAX_PAYLOAD_BYTES"] = "200"
    lines = [{"type": "payment", "payload": {"amount": 50, "pad": "x" * 100}}] * 300
    result = daemon.cli("emit-batch", "-", "--json", stdin=_lines(*lines))
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert len(results) == 300 and all(len(r["jobs"]) == 1 for r in results)


def test_jobs_cancel_by_rule_needs_yes_when_not_on_a_terminal(daemon):
    for n in range(3):
        daemon.cli("emit", "user_signup", "--payload", json.dumps({"u": n}))
    refused = daemon.cli("jobs", "cancel", "--rule", "welcome")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert len(daemon.cli_json("jobs", "list", "--status", "pending")) == 3
    done = daemon.cli("jobs", "cancel", "--rule", "welcome", "--yes")
    assert done.returncode == 0 and "3 job(s) of rule 'welcome' cancelled" in done.stdout
    assert daemon.cli_json("jobs", "list", "--status", "pending") == []


def test_jobs_cancel_takes_ids_or_a_rule_not_both(daemon):
    assert daemon.cli("jobs", "cancel", "X", "--rule", "welcome", "--yes").returncode == 2
    assert daemon.cli("jobs", "cancel").returncode == 2


def test_jobs_cancel_kill_stops_a_running_job_and_records_it_cancelled(daemon):
    emitted = daemon.cli_json("emit", "nap")
    job_id = emitted["jobs"][0]
    daemon.wait_job(job_id, "running")
    result = daemon.cli_json("jobs", "cancel", "--rule", "sleeper", "--kill", "--yes")
    assert result["killed"] == [job_id]
    job = daemon.wait_job(job_id, "cancelled")
    assert "cancel --kill" in job["last_error"]
    assert job["attempt_history"][-1]["outcome"] == "interrupted"
    assert daemon.job(job_id)["status"] == "cancelled"  # not retried


def _dead(daemon: Daemon, count: int) -> list[str]:
    ids = [daemon.cli_json("emit", "breaks")["jobs"][0] for _ in range(count)]
    for job_id in ids:
        daemon.wait_job(job_id, "dead")
    return ids


def test_dlq_retry_all_and_delete_all(daemon):
    dead = _dead(daemon, 2)
    retried = daemon.cli_json("dlq", "retry", "--all", "--rule", "broken")
    assert sorted(r["id"] for r in retried) == sorted(dead) and all(r["ok"] for r in retried)
    for job_id in dead:
        daemon.wait_job(job_id, "dead")  # retried once more, out of attempts again
    refused = daemon.cli("dlq", "delete", "--all", "--json")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    deleted = daemon.cli("dlq", "delete", "--all", "--rule", "broken", "--yes")
    assert deleted.returncode == 0 and "2 job(s) deleted" in deleted.stdout
    assert daemon.cli_json("dlq", "list") == []


def test_dlq_retry_of_several_ids_reports_each_and_fails_on_any_error(daemon):
    (dead,) = _dead(daemon, 1)
    result = daemon.cli("dlq", "retry", dead, "NOPE")
    assert result.returncode == 1
    assert f"{dead}: pending" in result.stdout and "NOPE" in result.stderr


def test_events_list_since_and_until(daemon):
    first = daemon.cli_json("emit", "user_signup")["id"]
    middle = daemon.cli_json("events", "show", first)["received_at"]
    second = daemon.cli_json("emit", "user_signup")["id"]
    since = [e["id"] for e in daemon.cli_json("events", "list", "--since", middle)]
    assert since == [second, first]
    assert daemon.cli_json("events", "list", "--until", middle) == []
    bad = daemon.cli("events", "list", "--since", "yesterday")
    assert bad.returncode == 2


def test_events_show_lists_jobs_with_statuses_and_each_rules_verdict(daemon):
    emitted = daemon.cli_json("emit", "payment", "--payload", '{"amount": 50}')
    shown = daemon.cli_json("events", "show", emitted["id"])
    assert [(j["rule"], j["status"]) for j in shown["job_summaries"]] == [("big", "pending")]
    verdicts = {m["rule"]: m["reason"] for m in shown["matches"]}
    assert verdicts == {
        "welcome": "other_type",
        "big": "matched",
        "sleeper": "other_type",
        "broken": "other_type",
    }
    table = daemon.cli("events", "show", emitted["id"])
    assert table.returncode == 0 and "matched" in table.stdout and "other_type" in table.stdout


def test_events_replay_dry_run_creates_nothing_and_replay_links_jobs(daemon):
    emitted = daemon.cli_json("emit", "user_signup", "--payload", '{"u": 1}')
    dry = daemon.cli_json("events", "replay", emitted["id"], "--dry-run")
    assert dry["dry_run"] is True and dry["replay"] is None
    assert [(j["id"], j["rule"]) for j in dry["jobs"]] == [(None, "welcome")]
    assert len(daemon.cli_json("jobs", "list", "--event", emitted["id"])) == 1
    done = daemon.cli_json("events", "replay", emitted["id"])
    assert done["event"]["id"] == emitted["id"] and done["replay"]["number"] == 1
    (job_id,) = [j["id"] for j in done["jobs"]]
    assert daemon.job(job_id)["event_id"] == emitted["id"]
    shown = daemon.cli_json("events", "show", emitted["id"])
    assert [r["number"] for r in shown["replays"]] == [1]
    assert len(shown["job_summaries"]) == 2
