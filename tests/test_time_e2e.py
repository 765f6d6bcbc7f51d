"""Time-based rules in a real daemon, driven by its fake clock: DST, restarts, reloads, previews."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from harness import Daemon, cli, wait_until

PY = sys.executable


def _rules(tmp: Path, rules: str, action: str = 'command: ["true"]') -> Path:
    path = tmp / "rules.yaml"
    body = f"actions:\n  act:\n    {action}\nrules:\n" + textwrap.indent(
        textwrap.dedent(rules), "  "
    )
    path.write_text(body)
    return path


def _jobs(d: Daemon, rule: str) -> list[dict]:
    return d.cli_json("jobs", "list", "--rule", rule, "--limit", "1000")


def _history(d: Daemon, rule: str) -> list[dict]:
    return d.cli_json("rules", "history", rule)


def _gated_action(tmp: Path) -> tuple[Path, str]:
    """An action that runs until the file `gate` exists (at most 30 s): a job we can hold open."""
    gate = tmp / "gate"
    script = tmp / "wait.py"
    script.write_text(
        "import pathlib, sys, time\n"
        "for _ in range(3000):\n"
        "    if pathlib.Path(sys.argv[1]).exists():\n"
        "        break\n"
        "    time.sleep(0.01)\n"
    )
    return gate, f"command: [{json.dumps(PY)}, {json.dumps(str(script))}, {json.dumps(str(gate))}]"


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()


def test_cron_rule_fires_on_time_and_records_history(tmp_path, daemons):
    rules = _rules(
        tmp_path,
        """
        - name: tick
          cron: "*/10 * * * *"
          perform: act
    """,
    )
    d = Daemon(tmp_path, rules, fake_clock="2026-03-02T09:03:00Z").start()
    daemons.append(d)
    (rule,) = d.cli_json("rules", "list")
    assert rule["next_fire"] == "2026-03-02T09:10:00+00:00"
    d.advance("7m")
    wait_until(lambda: len(_jobs(d, "tick")) == 1, what="the 09:10 job")
    d.advance("10m")
    wait_until(lambda: len(_jobs(d, "tick")) == 2, what="the 09:20 job")
    d.advance("10m")
    jobs = wait_until(lambda: len(j := _jobs(d, "tick")) == 3 and j, what="3 jobs")
    assert [j["scheduled_for"] for j in jobs] == [
        "2026-03-02T09:10:00+00:00",
        "2026-03-02T09:20:00+00:00",
        "2026-03-02T09:30:00+00:00",
    ]
    history = _history(d, "tick")
    assert [h["outcome"] for h in history] == ["fired", "fired", "fired"]
    older = d.cli_json("rules", "history", "tick", "--limit", "2", "--offset", "1")
    assert older == history[1:]
    assert {h["job_id"] for h in history} == {j["id"] for j in jobs}


def test_fixed_time_job_in_the_spring_gap_runs_once_at_the_jump(tmp_path, daemons):
    rules = _rules(
        tmp_path,
        """
        - name: nightly
          cron: "30 2 * * *"
          timezone: America/New_York
          perform: act
    """,
    )
    # 2025-03-08 12:00 EST; the gap is 2025-03-09 02:00-03:00 local.
    d = Daemon(tmp_path, rules, fake_clock="2025-03-08T17:00:00Z").start()
    daemons.append(d)
    d.advance("12h")  # 05:00Z = 00:00 EST on the change day
    d.advance("2h")  # 07:00Z = 03:00 EDT, the first instant after the jump
    (job,) = wait_until(lambda: _jobs(d, "nightly"), what="the gap job")
    assert job["scheduled_for"] == "2025-03-09T07:00:00+00:00"  # 03:00 EDT
    (occ,) = _history(d, "nightly")
    assert occ["note"] and "02:30" in occ["note"]


def test_wildcard_job_fires_in_both_copies_of_the_fall_back_hour(tmp_path, daemons):
    rules = _rules(
        tmp_path,
        """
        - name: hourly
          cron: "0 * * * *"
          timezone: America/New_York
          perform: act
          overlap: allow
    """,
    )
    # 2025-11-02 00:30 EDT = 04:30Z; 01:00 EDT = 05:00Z, 01:00 EST = 06:00Z, 02:00 EST = 07:00Z.
    d = Daemon(tmp_path, rules, fake_clock="2025-11-02T04:30:00Z").start()
    daemons.append(d)
    for _ in range(5):
        d.advance("30m")
    jobs = wait_until(lambda: len(j := _jobs(d, "hourly")) == 3 and j, what="3 hourly jobs")
    assert [j["scheduled_for"] for j in jobs] == [
        "2025-11-02T05:00:00+00:00",
        "2025-11-02T06:00:00+00:00",
        "2025-11-02T07:00:00+00:00",
    ]


@pytest.mark.parametrize(
    ("policy", "fired", "missed"),
    [("once", 1, 4), ("all", 5, 0), ("skip", 0, 5)],
    ids=["once", "all", "skip"],
)
def test_restart_after_missed_occurrences_follows_on_missed(
    tmp_path, daemons, policy, fired, missed
):
    rules = _rules(
        tmp_path,
        f"""
        - name: hourly
          cron: "0 * * * *"
          perform: act
          on_missed: {policy}
          overlap: allow
    """,
    )
    d = Daemon(tmp_path, rules, fake_clock="2026-03-02T09:30:00Z").start()
    d.stop()
    d2 = Daemon(tmp_path, rules, fake_clock="2026-03-02T14:30:00Z").start()  # missed 10..14
    daemons.append(d2)
    wait_until(lambda: len(_history(d2, "hourly")) == 5, what="5 recorded occurrences")
    history = _history(d2, "hourly")
    assert sum(h["outcome"] == "fired" for h in history) == fired
    assert sum(h["outcome"] == "missed" for h in history) == missed
    jobs = _jobs(d2, "hourly")
    assert len(jobs) == fired
    if policy == "once":
        assert jobs[0]["scheduled_for"] == "2026-03-02T14:00:00+00:00"
    (rule,) = d2.cli_json("rules", "list")
    assert rule["next_fire"] == "2026-03-02T15:00:00+00:00"


def test_grace_limits_how_late_a_missed_run_may_be(tmp_path, daemons):
    rules = _rules(
        tmp_path,
        """
        - name: daily
          cron: "0 6 * * *"
          perform: act
          on_missed: once
          grace: 1h
    """,
    )
    d = Daemon(tmp_path, rules, fake_clock="2026-03-02T05:00:00Z").start()
    d.stop()
    d2 = Daemon(tmp_path, rules, fake_clock="2026-03-02T09:00:00Z").start()
    daemons.append(d2)
    (occ,) = wait_until(lambda: _history(d2, "daily"), what="a record")
    assert occ["outcome"] == "missed" and "grace" in occ["reason"]
    assert _jobs(d2, "daily") == []


def test_interval_keeps_its_phase_across_reload_and_replans_when_changed(tmp_path, daemons):
    rules = _rules(
        tmp_path,
        """
        - name: beat
          every: 30m
          perform: act
    """,
    )
    d = Daemon(tmp_path, rules, fake_clock="2026-03-02T09:00:00Z").start()
    daemons.append(d)
    d.advance("10m")
    rules.write_text(rules.read_text().replace("perform: act", "perform: act\n    priority: 5"))
    d.cli_json("reload")
    assert d.cli_json("rules", "show", "beat")["next_fire"] == "2026-03-02T09:30:00+00:00"
    from_daemon = d.cli_json("next", "beat", "--count", "2")
    assert from_daemon == ["2026-03-02T09:30:00+00:00", "2026-03-02T10:00:00+00:00"]
    rules.write_text(rules.read_text().replace("every: 30m", "every: 20m"))
    d.cli_json("reload")
    wait_until(
        lambda: d.cli_json("rules", "show", "beat")["next_fire"] == "2026-03-02T09:30:00+00:00",
        what="re-planned next fire (09:10 + 20m)",
    )


def test_overlap_skip_records_a_skipped_occurrence(tmp_path, daemons):
    gate, action = _gated_action(tmp_path)
    rules = _rules(
        tmp_path,
        """
        - name: minutely
          cron: "* * * * *"
          perform: act
    """,
        action,
    )
    d = Daemon(tmp_path, rules, fake_clock="2026-03-02T09:00:30Z").start()
    daemons.append(d)
    d.advance("30s")
    (first,) = wait_until(lambda: _jobs(d, "minutely"), what="the first job")
    d.wait_job(first["id"], "running")
    d.advance("1m")
    wait_until(lambda: len(_history(d, "minutely")) == 2, what="a second record")
    skipped = _history(d, "minutely")[0]
    assert skipped["outcome"] == "skipped" and "overlap" in skipped["reason"]
    gate.write_text("go")
    d.wait_job(first["id"], "succeeded")


def test_next_cron_preview_offline_json():
    result = cli(
        "next",
        "--cron",
        "30 2 * * *",
        "--tz",
        "America/New_York",
        "--after",
        "2025-03-08T12:00:00Z",
        "--count",
        "3",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        "2025-03-09T03:00:00-04:00",
        "2025-03-10T02:30:00-04:00",
        "2025-03-11T02:30:00-04:00",
    ]
    human = cli(
        "next",
        "--cron",
        "30 2 * * *",
        "--tz",
        "America/New_York",
        "--after",
        "2025-03-08T12:00:00Z",
        "--count",
        "1",
    )
    assert "Sunday" in human.stdout and "02:30" in human.stdout


def test_next_for_a_rule_from_a_rules_file(tmp_path):
    rules = _rules(
        tmp_path,
        """
        - name: weekly-report
          every: monday
          at: "09:00"
          timezone: America/New_York
          perform: act
    """,
    )
    result = cli(
        "next",
        "weekly-report",
        "--rules",
        str(rules),
        "--after",
        "2026-11-27T00:00:00Z",
        "--count",
        "2",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["2026-11-30T09:00:00-05:00", "2026-12-07T09:00:00-05:00"]


def test_next_rejects_bad_cron_with_a_clear_error():
    result = cli("next", "--cron", "61 * * * *")
    assert result.returncode == 1
    assert "61" in result.stderr and "Traceback" not in result.stderr


def test_overlap_queue_runs_one_waiting_job_after_the_running_one(tmp_path, daemons):
    gate, action = _gated_action(tmp_path)
    rules = _rules(
        tmp_path,
        """
        - name: minutely
          cron: "* * * * *"
          perform: act
          overlap: queue
    """,
        action,
    )
    d = Daemon(tmp_path, rules, fake_clock="2026-03-02T09:00:30Z").start()
    daemons.append(d)
    d.advance("30s")
    (first,) = wait_until(lambda: _jobs(d, "minutely"), what="the first job")
    d.wait_job(first["id"], "running")
    d.advance("1m")
    jobs = wait_until(lambda: len(j := _jobs(d, "minutely")) == 2 and j, what="a queued job")
    second = jobs[1]
    d.advance("1m")
    wait_until(lambda: len(_history(d, "minutely")) == 3, what="a third record")
    assert _history(d, "minutely")[0]["reason"] == (
        "overlap: a run is already queued behind the running one"
    )
    assert d.job(second["id"])["status"] == "pending"  # waits: never runs beside the first
    gate.write_text("go")
    d.wait_job(first["id"], "succeeded")
    d.wait_job(second["id"], "succeeded")


def test_payload_zone_that_is_not_a_zone_still_stores_the_event_and_notes_the_job(
    tmp_path, daemons
):
    rules = _rules(
        tmp_path,
        """
        - name: follow-up
          on_event: order_shipped
          offset: 1d
          at: "10:00"
          timezone: payload.tz
          perform: act
        - name: audit
          on_event: order_shipped
          offset: 1h
          perform: act
    """,
    )
    d = Daemon(tmp_path, rules, fake_clock="2026-03-02T09:00:00Z").start()
    daemons.append(d)
    for tz in ("America", "Etc", "x" * 5000):
        result = d.cli_json("emit", "order_shipped", "--payload", json.dumps({"tz": tz}))
        assert len(result["jobs"]) == 2  # stored, and the other rule fired too
        assert d.cli_json("events", "show", result["id"])["payload"] == {"tz": tz}
        (job,) = [
            j
            for j in d.cli_json("jobs", "list", "--event", result["id"])
            if j["rule"] == "follow-up"
        ]
        shown = d.cli_json("jobs", "show", job["id"])
        assert shown["perform_at"] == "2026-03-03T10:00:00+00:00"  # the rule's zone: UTC
        assert "is not a time zone" in shown["note"] and "used UTC" in shown["note"]
        assert "note" in d.cli("jobs", "show", job["id"]).stdout
    assert "is not a time zone" in d.log.read_text()
