"""`timeos rules disable/enable/set/reset/run` against a real timeosd on its fake clock."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from harness import Daemon, wait_until


def _rules(tmp: Path) -> Path:
    path = tmp / "rules.yaml"
    path.write_text(
        textwrap.dedent(
            """
            actions:
              act:
                command: ["true"]
            rules:
              - name: tick
                cron: "0 * * * *"
                perform: act
              - name: hook
                on_event: signup
                perform: act
            """
        )
    )
    return path


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, _rules(tmp_path), fake_clock="2026-03-02T09:05:00Z").start()
    yield d
    d.stop()


def test_disable_for_holds_a_time_rule_back_and_brings_it_back_on_the_fake_clock(daemon):
    out = daemon.cli("rules", "disable", "tick", "--for", "2h")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "tick: disabled until 2026-03-02T11:05:00+00:00\n"
    shown = daemon.cli_json("rules", "show", "tick")
    assert shown["enabled"] is False
    assert shown["enabled_from"] == "override"
    assert shown["disabled_until"] == "2026-03-02T11:05:00+00:00"
    assert shown["overrides"]["enabled"]["from"] == "override"
    daemon.advance("2h")
    jobs = wait_until(
        lambda: daemon.cli_json("jobs", "list", "--rule", "tick"), what="the late run"
    )
    assert [j["scheduled_for"] for j in jobs] == ["2026-03-02T11:00:00+00:00"]
    history = daemon.cli_json("rules", "history", "tick")
    assert [(h["scheduled_for"][11:16], h["outcome"], h["reason"]) for h in history] == [
        ("11:00", "fired", "late run (on_missed: once)"),
        ("10:00", "skipped", "rule disabled"),
    ]
    assert daemon.cli_json("rules", "show", "tick")["enabled_from"] == "file"


def test_a_disabled_event_rule_stays_disabled_after_a_restart_until_enabled(daemon):
    assert daemon.cli("rules", "disable", "hook").returncode == 0
    daemon.stop()
    daemon.start()
    assert daemon.cli_json("emit", "signup")["jobs"] == []
    assert daemon.cli("reload").returncode == 0
    assert daemon.cli_json("emit", "signup")["jobs"] == []
    out = daemon.cli("rules", "enable", "hook")
    assert out.stdout == "hook: enabled\n"
    assert len(daemon.cli_json("emit", "signup")["jobs"]) == 1


def test_set_overrides_priority_and_show_names_each_source(daemon):
    out = daemon.cli("rules", "set", "hook", "--priority", "5", "--rate-limit", "10/minute")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hook: priority 5\nhook: rate-limit 10/minute\n"
    shown = daemon.cli_json("rules", "show", "hook")
    assert shown["priority"] == 5
    assert shown["overrides"]["priority"] == {"value": 5, "from": "override", "file": 0}
    assert shown["overrides"]["rate_limit"] == {
        "value": "10/minute",
        "from": "override",
        "file": None,
    }
    (job_id,) = daemon.cli_json("emit", "signup")["jobs"]
    assert daemon.job(job_id)["priority"] == 5
    piped = daemon.cli("rules", "show", "hook").stdout
    assert "priority\t5 (override; file: 0)" in piped
    assert daemon.cli("rules", "reset", "hook").returncode == 0
    assert daemon.cli_json("rules", "show", "hook")["overrides"]["priority"]["from"] == "file"


def test_set_with_a_bad_rate_limit_or_nothing_to_set_is_a_usage_error(daemon):
    bad = daemon.cli("rules", "set", "hook", "--rate-limit", "10/week")
    assert bad.returncode == 2
    assert "10/minute" in bad.stderr
    assert daemon.cli("rules", "set", "hook").returncode == 2
    assert daemon.cli("rules", "disable", "hook", "--for", "soon").returncode == 2
    assert daemon.cli("rules", "disable", "nope").returncode == 1


def test_run_creates_a_job_at_once_and_list_shows_it_as_last(daemon):
    out = daemon.cli("rules", "run", "hook", "--payload", '{"user": 1}')
    assert out.returncode == 0, out.stderr
    job = daemon.job(out.stdout.strip())
    assert (job["payload"], job["event_id"], job["note"]) == ({"user": 1}, None, "manual run")
    ticked = daemon.cli_json("rules", "run", "tick")
    assert ticked["payload"]["manual"] is True
    (occurrence,) = daemon.cli_json("rules", "history", "tick")
    assert (occurrence["outcome"], occurrence["reason"]) == ("fired", "manual run")
    rules = {r["name"]: r for r in daemon.cli_json("rules", "list")}
    assert rules["hook"]["last_run"] == "2026-03-02T09:05:00+00:00"
    assert rules["tick"]["next_fire"] == "2026-03-02T10:00:00+00:00"  # schedule untouched
    header, *rows = daemon.cli("rules", "list").stdout.splitlines()
    assert header.split("\t")[-2:] == ["last", "enabled"]
    assert all(row.split("\t")[-2].startswith("2026-03-02") for row in rows)
