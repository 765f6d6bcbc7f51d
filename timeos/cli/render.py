"""Rich tables and panels for people, built from the API's JSON objects (no printing here).

The CLI prints what these return; `--json` output bypasses this module entirely.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

STATUS_STYLES = {
    "pending": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "retrying": "magenta",
    "dead": "bold red",
    "cancelled": "dim",
    "healthy": "green",
    "degraded": "yellow",
    "unhealthy": "bold red",
    "fired": "green",
    "skipped": "yellow",
    "missed": "red",
}


def _status(value: str | None) -> Text:
    return Text(value or "-", style=STATUS_STYLES.get(value or "", ""))


def _short_time(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _kv(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(
            key, value if isinstance(value, Text) else Text(str("-" if value is None else value))
        )
    return table


def jobs_table(jobs: list[dict[str, Any]], title: str = "Jobs", width: int = 200) -> Table:
    """One row per job; below 110 columns, only what identifies and schedules a job."""
    wide = width >= 110
    table = Table(title=f"{title} ({len(jobs)})", title_justify="left")
    # Ids, statuses and times stay whole (people copy them); the other columns wrap.
    table.add_column("id", no_wrap=True)
    table.add_column("rule", overflow="fold", min_width=8)
    if wide:
        table.add_column("action", overflow="fold")
    table.add_column("status", no_wrap=True)
    if wide:
        table.add_column("prio", no_wrap=True)
    table.add_column("perform_at", no_wrap=True)
    table.add_column("tries", no_wrap=True)
    if wide:
        table.add_column("last error", overflow="fold")
    for job in jobs:
        cells: list[Any] = [job["id"], job["rule"]]
        if wide:
            cells.append(job["action"])
        cells.append(_status(job["status"]))
        if wide:
            cells.append(str(job["priority"]))
        cells.append(_short_time(job["perform_at"]) if wide else _compact_time(job["perform_at"]))
        cells.append(f"{job['attempts']}/{job['max_attempts']}")
        if wide:
            cells.append((job.get("last_error") or "")[:80])
        table.add_row(*cells)
    return table


def _compact_time(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%m-%d %H:%MZ")


def job_panel(job: dict[str, Any]) -> RenderableType:
    """A job's fields and attempt history."""
    fields = _kv(
        f"Job {job['id']}",
        [
            ("rule", job["rule"]),
            ("action", job["action"]),
            ("status", _status(job["status"])),
            ("priority", job["priority"]),
            ("perform_at", _short_time(job["perform_at"])),
            ("scheduled_for", _short_time(job.get("scheduled_for"))),
            ("attempts", f"{job['attempts']} of {job['max_attempts']}"),
            ("event", job.get("event_id")),
            ("last error", job.get("last_error")),
            ("note", job.get("note")),
        ],
    )
    history = Table(title="Attempts", title_justify="left")
    for column in ("#", "started", "ended", "outcome"):
        history.add_column(column, no_wrap=True)
    history.add_column("error", overflow="fold")
    for attempt in job.get("attempt_history", []):
        history.add_row(
            str(attempt["number"]),
            _short_time(attempt["started_at"]),
            _short_time(attempt["ended_at"]),
            _status(attempt["outcome"]),
            attempt.get("error") or "",
        )
    return Group(fields, history)


def events_table(events: list[dict[str, Any]]) -> Table:
    """One row per event."""
    table = Table(title=f"Events ({len(events)})", title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("type", overflow="fold")
    table.add_column("occurred_at", no_wrap=True)
    for column in ("idempotency key", "payload"):
        table.add_column(column, overflow="fold")
    for event in events:
        table.add_row(
            event["id"],
            event["type"],
            _short_time(event["occurred_at"]),
            event.get("idempotency_key") or "",
            _compact(event["payload"]),
        )
    return table


def event_panel(event: dict[str, Any]) -> RenderableType:
    """An event's fields and the jobs it created."""
    return _kv(
        f"Event {event['id']}",
        [
            ("type", event["type"]),
            ("occurred_at", _short_time(event["occurred_at"])),
            ("received_at", _short_time(event.get("received_at"))),
            ("idempotency key", event.get("idempotency_key")),
            ("payload", _compact(event["payload"])),
            ("jobs", ", ".join(event.get("jobs", [])) or "none"),
        ],
    )


def _trigger(rule: dict[str, Any]) -> str:
    kind = rule.get("trigger")
    if kind == "event":
        text = f"on {rule['on_event']}"
        if rule.get("offset") and rule["offset"] != "0s":
            text += f" +{rule['offset']}"
        if rule.get("at"):
            text += f" at {rule['at']}"
        return text
    if kind == "cron":
        return f"{rule.get('schedule') or 'cron ' + rule['cron']} ({rule['timezone']})"
    return f"every {rule.get('every')}"


def rules_table(rules: list[dict[str, Any]], width: int = 200) -> Table:
    """One row per rule, with the next fire time of time-based ones (fewer columns if narrow)."""
    wide = width >= 110
    table = Table(title=f"Rules ({len(rules)})", title_justify="left")
    table.add_column("name", overflow="fold", min_width=10)
    table.add_column("trigger", overflow="fold", min_width=12)
    if wide:
        for column in ("action", "prio", "when"):
            table.add_column(column, overflow="fold")
    table.add_column("next fire", no_wrap=True)
    if wide:
        table.add_column("enabled", no_wrap=True)
    for rule in rules:
        nxt = rule.get("next_fire") if rule.get("trigger") != "event" else None
        cells: list[Any] = [rule["name"], _trigger(rule)]
        if wide:
            cells += [rule["action"], str(rule["priority"]), rule.get("when") or ""]
        cells.append((_short_time(nxt) if wide else _compact_time(nxt)) if nxt else "")
        if wide:
            cells.append("yes" if rule.get("enabled", True) else "no")
        table.add_row(*cells)
    return table


def rule_panel(rule: dict[str, Any]) -> RenderableType:
    """All fields of one rule."""
    rows = [(key, value) for key, value in rule.items() if key != "name"]
    return _kv(
        f"Rule {rule['name']}", [(k, _compact(v) if isinstance(v, dict) else v) for k, v in rows]
    )


def history_table(name: str, occurrences: list[dict[str, Any]]) -> Table:
    """A time-based rule's occurrences, newest first."""
    table = Table(title=f"History of {name} ({len(occurrences)})", title_justify="left")
    # Times, outcomes and job ids stay whole (people copy them); reasons and notes wrap.
    for column in ("scheduled for", "outcome", "reason", "job", "note"):
        whole = column in ("scheduled for", "outcome", "job")
        table.add_column(column, no_wrap=whole, overflow="ellipsis" if whole else "fold")
    for occ in occurrences:
        table.add_row(
            _short_time(occ["scheduled_for"]),
            _status(occ["outcome"]),
            occ.get("reason") or "",
            occ.get("job_id") or "",
            occ.get("note") or "",
        )
    return table


def fires_table(fires: list[dict[str, Any]], now: datetime) -> Table:
    """Upcoming fire times: local, UTC, weekday, time from now, DST marker."""
    table = Table(title="Next fire times", title_justify="left")
    for column in ("local", "weekday", "UTC", "from now"):
        table.add_column(column, no_wrap=True)
    table.add_column("DST", overflow="fold")
    for fire in fires:
        at = datetime.fromisoformat(fire["at"]).astimezone(UTC)
        local = at.astimezone(ZoneInfo(fire["zone"])) if fire.get("zone") else at
        table.add_row(
            local.strftime("%Y-%m-%d %H:%M %Z"),
            local.strftime("%A"),
            at.strftime("%Y-%m-%d %H:%M"),
            _from_now(at - now),
            Text(fire.get("note") or "", style="yellow"),
        )
    return table


def _from_now(delta: Any) -> str:
    seconds = int(delta.total_seconds())
    sign = "in " if seconds >= 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days}d"] if days else []
    if hours or days:
        parts.append(f"{hours}h")
    parts.append(f"{minutes}m")
    return sign + " ".join(parts) + ("" if sign else " ago")


def health_panel(health: dict[str, Any]) -> RenderableType:
    """Overall status, components and job counts."""
    components = Table(title="Components", title_justify="left")
    components.add_column("component")
    components.add_column("status")
    components.add_column("detail", overflow="fold")
    for name, comp in health["components"].items():
        components.add_row(name, _status(comp["status"]), comp.get("message", ""))
    counts = _kv("Jobs", [(k, v) for k, v in health.get("jobs", {}).items()])
    return Group(Text.assemble("Health: ", _status(health["status"])), components, counts)


def status_panel(status: dict[str, Any]) -> RenderableType:
    """The daemon's facts."""
    keys = (
        "version",
        "pid",
        "socket",
        "database",
        "synchronous",
        "rules",
        "actions",
        "workers",
        "started_at",
        "uptime_seconds",
        "reloads",
    )
    return _kv("timeosd is up", [(k, status.get(k)) for k in keys])


def _compact(value: Any) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= 120 else text[:117] + "..."
