"""Rich tables and panels: what stays whole, what narrow terminals drop, empty results."""

from __future__ import annotations

import io
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console, RenderableType

from timeos.cli import render
from timeos.daemon.api import event_json, job_json, rule_json
from timeos.model import (
    Attempt,
    CronTrigger,
    Event,
    EventTrigger,
    IntervalTrigger,
    Job,
    JobStatus,
    Outcome,
    Rule,
)
from timeos.time.preview import fire_json

NOW = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)  # a Saturday
JOB_ID = "01KJPWD6M0SBZJ8202XXCW1P0C"
LONG = "a-very-long-rule-name-that-goes-on-and-on-and-on"


def text(renderable: RenderableType, width: int = 80) -> str:
    """What a terminal of `width` columns shows, without colour."""
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def header(rendered: str) -> list[str]:
    """The column names of the first table in `rendered` (a wrapped name joined again)."""
    rows = [line.rstrip()[1:].split("┃") for line in rendered.splitlines() if line[:1] == "┃"]
    rows = [row[:-1] if row[-1] == "" else row for row in rows]  # the closing border
    columns = zip(*rows, strict=True)
    return [" ".join(part.strip() for part in column if part.strip()) for column in columns]


def job(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": JOB_ID,
        "rule": LONG,
        "action": "send_welcome_email",
        "status": "retrying",
        "priority": 10,
        "perform_at": "2026-03-02T14:31:00+05:30",
        "attempts": 2,
        "max_attempts": 5,
        "event_id": None,
        "last_error": "connection refused " * 10,
        "scheduled_for": None,
    }
    return body | changes


# ---- jobs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [80, 109], ids=["80-columns", "109-columns"])
def test_narrow_jobs_table_keeps_only_identifying_columns_and_never_cuts_them(width):
    rendered = text(render.jobs_table([job()], width=width), width)
    assert header(rendered) == ["id", "rule", "status", "perform_at", "tries"]
    assert JOB_ID in rendered and "retrying" in rendered
    assert "03-02 09:01Z" in rendered  # in UTC, whole
    assert "2/5" in rendered
    assert "…" not in rendered  # nothing ellipsized


@pytest.mark.parametrize("width", [110, 160], ids=["110-columns", "160-columns"])
def test_wide_jobs_table_adds_action_priority_and_last_error(width):
    rendered = text(render.jobs_table([job()], width=width), width)
    assert header(rendered) == [
        "id",
        "rule",
        "action",
        "status",
        "prio",
        "perform_at",
        "tries",
        "last error",
    ]
    assert JOB_ID in rendered and "retrying" in rendered
    assert "2026-03-02 09:01:00Z" in rendered
    assert "…" not in rendered


def test_long_rule_names_fold_instead_of_being_cut():
    rendered = text(render.jobs_table([job()], width=80))
    folded = "".join(line.split("│")[2].strip() for line in rendered.splitlines() if "│" in line)
    assert folded == LONG


def test_last_error_is_cut_to_80_characters_in_the_table():
    rendered = text(render.jobs_table([job(last_error="x" * 200)], width=200), 200)
    assert rendered.count("x") == 80


def test_job_panel_shows_fields_and_attempt_history_with_dashes_for_missing_values():
    history = [
        {
            "number": 1,
            "started_at": "2026-03-02T09:00:00+00:00",
            "ended_at": "2026-03-02T09:00:30+00:00",
            "outcome": "timeout",
            "error": "took longer than 30s " * 5,
        },
        {
            "number": 2,
            "started_at": "2026-03-02T09:05:00+00:00",
            "ended_at": None,
            "outcome": None,
            "error": None,
        },
    ]
    rendered = text(render.job_panel(job(attempt_history=history)))
    assert f"Job {JOB_ID}" in rendered
    assert "2 of 5" in rendered
    assert "2026-03-02 09:00:00Z" in rendered and "2026-03-02 09:00:30Z" in rendered
    assert "timeout" in rendered
    second = next(line for line in rendered.splitlines() if line.startswith("│ 2 "))
    assert "2026-03-02 09:05:00Z" in second and second.count(" - ") == 2  # ended, outcome
    event_line = next(line for line in rendered.splitlines() if line.startswith(" event"))
    assert event_line.split() == ["event", "-"]


# ---- events -----------------------------------------------------------------------------------


def test_events_table_shows_ids_and_times_whole_and_compacts_payloads():
    event = {
        "id": JOB_ID,
        "type": "user_signup",
        "payload": {"user_id": "42", "blob": "y" * 300},
        "occurred_at": "2026-03-02T09:00:00+00:00",
        "idempotency_key": None,
    }
    rendered = text(render.events_table([event]), 120)
    assert JOB_ID in rendered and "2026-03-02 09:00:00Z" in rendered
    assert '{"user_id":"42","blob":"yyy' in rendered
    assert "..." in rendered and rendered.count("y") < 120


def test_event_panel_says_none_when_no_job_was_created():
    event = {"id": "E1", "type": "t", "payload": {}, "occurred_at": "2026-03-02T09:00:00Z"}
    rendered = text(render.event_panel(event))
    lines = {line.split()[0]: line.split()[1:] for line in rendered.splitlines()[1:] if line}
    assert lines["jobs"] == ["none"] and lines["payload"] == ["{}"]
    assert lines["received_at"] == ["-"]


# ---- rules ------------------------------------------------------------------------------------


RULES: list[dict[str, Any]] = [
    {
        "name": "weekly-report",
        "trigger": "cron",
        "cron": "0 9 * * 1",
        "schedule": "every monday at 09:00",
        "timezone": "America/New_York",
        "action": "log",
        "priority": 0,
        "enabled": True,
        "next_fire": "2026-03-09T13:00:00+00:00",
    },
    {
        "name": "welcome",
        "trigger": "event",
        "on_event": "user_signup",
        "offset": "2d",
        "at": "10:00",
        "timezone": "UTC",
        "action": "log",
        "priority": 5,
        "when": "payload.amount > 1000",
        "enabled": False,
        "next_fire": "2026-03-09T13:00:00+00:00",  # never shown for an event rule
    },
    {"name": "now", "trigger": "event", "on_event": "ping", "offset": "0s", "action": "log"},
    {"name": "backups", "trigger": "cron", "cron": "0 */6 * * *", "timezone": "UTC"},
    {"name": "pulse", "trigger": "every", "every": "30m", "action": "log", "priority": 0},
]


def _row(rendered: str, name: str) -> list[str]:
    line = next(line for line in rendered.splitlines() if line.startswith(f"│ {name} "))
    return [cell.strip() for cell in line.strip("│").split("│")]


@pytest.mark.parametrize(
    ("name", "trigger"),
    [
        ("weekly-report", "every monday at 09:00 (America/New_York)"),
        ("welcome", "on user_signup +2d at 10:00"),
        ("now", "on ping"),
        ("backups", "cron 0 */6 * * * (UTC)"),
        ("pulse", "every 30m"),
    ],
    ids=["weekday-label", "event-offset-at", "event-no-offset", "plain-cron", "interval"],
)
def test_rules_table_describes_each_trigger_kind(name, trigger):
    rendered = text(render.rules_table([r | {"action": "a", "priority": 0} for r in RULES]), 200)
    assert _row(rendered, name)[1] == trigger


def test_narrow_rules_table_keeps_name_trigger_and_next_fire_only_for_time_rules():
    rendered = text(render.rules_table(RULES[:2], width=80), 80)
    assert header(rendered) == ["name", "trigger", "next fire"]
    assert _row(rendered, "weekly-report")[2] == "03-09 13:00Z"
    assert _row(rendered, "welcome")[2] == ""


def test_wide_rules_table_shows_enabled_and_the_full_next_fire():
    rendered = text(render.rules_table(RULES[:2], width=160), 160)
    assert header(rendered)[-2:] == ["next fire", "enabled"]
    assert _row(rendered, "weekly-report")[-2:] == ["2026-03-09 13:00:00Z", "yes"]
    assert _row(rendered, "welcome")[-2:] == ["", "no"]


def test_rule_panel_compacts_nested_values():
    rendered = text(render.rule_panel({"name": "r", "dst": {"gap": "skip"}, "grace": None}))
    assert "Rule r" in rendered and '{"gap":"skip"}' in rendered
    assert next(line for line in rendered.splitlines() if "grace" in line).split() == ["grace", "-"]


# ---- time -------------------------------------------------------------------------------------


def test_history_table_keeps_times_outcomes_and_job_ids_whole_at_80_columns():
    occurrence = {
        "scheduled_for": "2026-11-01T05:30:00+00:00",
        "outcome": "skipped",
        "reason": "overlap: the previous run is still going and overlap is skip",
        "job_id": JOB_ID,
        "note": "first of two 01:30s",
    }
    rendered = text(render.history_table("nightly", [occurrence]))
    assert "History of nightly (1)" in rendered
    assert "2026-11-01 05:30:00Z" in rendered and JOB_ID in rendered and "skipped" in rendered


def test_fires_table_shows_local_time_weekday_utc_countdown_and_dst_marker():
    ny = ZoneInfo("America/New_York")
    fires = [
        fire_json(datetime(2026, 3, 8, 7, 0, tzinfo=UTC), ny, "moved from 02:30 by the DST gap"),
        fire_json(datetime(2026, 3, 9, 6, 30, tzinfo=UTC), ny, None),
    ]
    rendered = text(render.fires_table(fires, NOW))
    first = rendered.splitlines()[4]
    assert first.startswith("│ 2026-03-08 03:00 EDT │ Sunday  │ 2026-03-08 07:00 │ in 19h 0m ")
    dst = [line.split("│")[5].strip() for line in rendered.splitlines()[4:-1]]
    assert " ".join(part for part in dst if part) == "moved from 02:30 by the DST gap"
    assert (
        "2026-03-09 02:30 EDT" in rendered and "Monday" in rendered and "in 1d 18h 30m" in rendered
    )


@pytest.mark.parametrize(
    ("delta", "shown"),
    [
        (timedelta(minutes=5), "in 5m"),
        (timedelta(hours=2), "in 2h 0m"),
        (timedelta(days=3, minutes=1), "in 3d 0h 1m"),
        (timedelta(0), "in 0m"),
        (-timedelta(minutes=90), "1h 30m ago"),
    ],
    ids=["minutes", "hours", "days", "now", "past"],
)
def test_fires_table_counts_time_from_now(delta, shown):
    fire = fire_json(NOW + delta, ZoneInfo("UTC"), None)
    rendered = text(render.fires_table([fire], NOW), 120)
    assert f"│ {shown} " in rendered


def test_fire_times_stay_whole_at_80_columns_even_with_a_long_note():
    fire = fire_json(
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
        ZoneInfo("America/Argentina/Buenos_Aires"),
        "second of two 01:30s (skipped: dst gap: skip)",
    )
    rendered = text(render.fires_table([fire], NOW))
    assert "2026-11-01 02:30 -03" in rendered and "2026-11-01 05:30" in rendered
    assert "in 238d 17h 30m" in rendered


# ---- health, status, empty --------------------------------------------------------------------


def test_health_panel_shows_overall_status_each_component_and_job_counts():
    health = {
        "status": "degraded",
        "components": {
            "database": {"status": "healthy", "message": "/var/lib/timeos/timeos.db"},
            "rules": {"status": "degraded", "message": "last reload rejected"},
        },
        "jobs": {"pending": 2, "dead": 0},
    }
    rendered = text(render.health_panel(health))
    assert rendered.splitlines()[0].strip() == "Health: degraded"
    assert _row(rendered, "rules") == ["rules", "degraded", "last reload rejected"]
    assert any(line.split() == ["dead", "0"] for line in rendered.splitlines())


def test_status_panel_shows_a_dash_for_facts_the_daemon_did_not_send():
    rendered = text(render.status_panel({"version": "0.1.0", "rules": 3}))
    rows = {line.split()[0]: line.split()[1:] for line in rendered.splitlines()[1:] if line}
    assert rows["version"] == ["0.1.0"] and rows["rules"] == ["3"] and rows["pid"] == ["-"]


@pytest.mark.parametrize(
    ("table", "title"),
    [
        (render.jobs_table([]), "Jobs (0)"),
        (render.jobs_table([], "Dead letter queue"), "Dead letter queue (0)"),
        (render.events_table([]), "Events (0)"),
        (render.rules_table([]), "Rules (0)"),
        (render.history_table("nightly", []), "History of nightly (0)"),
    ],
    ids=["jobs", "dlq", "events", "rules", "history"],
)
def test_empty_results_render_a_titled_table_without_rows(table, title):
    lines = text(table).splitlines()
    assert lines[0].strip() == title
    assert len(lines) == 5 and lines[-1].startswith("└")  # title, top, header, rule, bottom


# ---- the API's JSON shapes --------------------------------------------------------------------


def test_every_renderer_reads_the_fields_the_api_sends():
    at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    event = Event(JOB_ID, "user_signup", {"user_id": "1"}, at, at, "k1")
    model_job = Job(JOB_ID, "welcome", "act", JobStatus.DEAD, 0, at, 1, 1, {}, at, at, JOB_ID)
    attempt = Attempt(JOB_ID, 1, at, at + timedelta(seconds=2), Outcome.FAILED, "boom")
    rules = [
        Rule("welcome", EventTrigger("user_signup", timedelta(days=2), time(10)), "act"),
        Rule("weekly", CronTrigger("0 9 * * 1", "every monday at 09:00"), "act"),
        Rule("pulse", IntervalTrigger(timedelta(minutes=30)), "act"),
    ]
    rendered = "".join(
        [
            text(render.jobs_table([job_json(model_job)]), 160),
            text(render.job_panel(job_json(model_job, [attempt]))),
            text(render.events_table([event_json(event)]), 120),
            text(render.event_panel({**event_json(event), "jobs": [JOB_ID]})),
            text(render.rules_table([rule_json(r) for r in rules]), 160),
            text(render.rule_panel(rule_json(rules[1]))),
        ]
    )
    for shown in (JOB_ID, "dead", "boom", "k1", "on user_signup +2d at 10:00", "every 30m"):
        assert shown in rendered
    assert "every monday at 09:00 (UTC)" in rendered
