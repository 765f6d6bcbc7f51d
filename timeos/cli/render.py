"""Sheets and panels for people, built from the API's JSON objects (no printing here).

cli/output.py prints what these return, as TSV into pipes or as rich tables on a terminal;
`--json` output bypasses this module entirely.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from timeos.cli.table import Column, Kind, Sheet, View
from timeos.timefmt import format_duration

STATUS_STYLES = {
    "pending": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "retrying": "magenta",
    "dead": "bold red",
    "cancelled": "dim",
    "blocked": "blue",
    "healthy": "green",
    "degraded": "yellow",
    "unhealthy": "bold red",
    "fired": "green",
    "skipped": "yellow",
    "missed": "red",
}

OUTPUT_TAIL_LINES = 20  # lines of the last attempt's output that `jobs show` prints


@dataclass(slots=True)
class Panel:
    """One object's fields as (name, kind, value), then any sheets and a text block below."""

    title: str
    fields: list[tuple[str, Kind, Any]]
    sheets: list[Sheet] = field(default_factory=list)
    text_title: str | None = None
    text: str | None = None


JOB_COLUMNS = [
    Column("id", "id", "id"),
    Column("rule", "rule", importance=6),
    Column("action", "action", importance=3),
    Column("status", "status", "status", importance=8),
    Column("priority", "prio", "int", wide_only=True),
    Column("perform_at", "perform_at", "time", importance=7),
    Column("attempts", "tries", "text", importance=9),
    Column("event_id", "event", "id", wide_only=True),
    Column("last_error", "last error", importance=1),
]


def jobs_sheet(
    jobs: list[dict[str, Any]], title: str = "Jobs", total: int | None = None, offset: int = 0
) -> Sheet:
    """One row per job."""
    rows = [
        [
            j["id"],
            j["rule"],
            j["action"],
            j["status"],
            j["priority"],
            j["perform_at"],
            f"{j['attempts']}/{j['max_attempts']}",
            j.get("event_id"),
            j.get("last_error"),
        ]
        for j in jobs
    ]
    return Sheet(title, JOB_COLUMNS, rows, total, offset)


def job_panel(job: dict[str, Any]) -> Panel:
    """A job's fields, its attempt history and the tail of the last attempt's output."""
    fields: list[tuple[str, Kind, Any]] = [
        ("rule", "text", job["rule"]),
        ("action", "text", job["action"]),
        ("status", "status", job["status"]),
        ("priority", "int", job["priority"]),
        ("perform_at", "time", job["perform_at"]),
        ("scheduled_for", "time", job.get("scheduled_for")),
        ("attempts", "text", f"{job['attempts']} of {job['max_attempts']}"),
        ("event", "id", job.get("event_id")),
        ("last error", "text", job.get("last_error")),
        ("cancelled_by", "id", job.get("cancelled_by")),
        ("note", "text", job.get("note")),
        ("created_at", "time", job.get("created_at")),
        ("updated_at", "time", job.get("updated_at")),
    ]
    history = job.get("attempt_history", [])
    attempts = Sheet(
        "Attempts",
        [
            Column("number", "#", "int"),
            Column("started_at", "started", "time"),
            Column("ended_at", "ended", "time"),
            Column("outcome", "outcome", "status"),
            Column("error", "error", importance=1),
            Column("delayed", "delayed", importance=2),
        ],
        [
            [
                a["number"],
                a["started_at"],
                a.get("ended_at"),
                a.get("outcome"),
                a.get("error"),
                _delayed(a),
            ]
            for a in history
        ],
    )
    panel = Panel(f"Job {job['id']}", fields, [attempts])
    chain = [("parent", j) for j in job.get("parents") or []]
    chain += [("child", j) for j in job.get("children") or []]
    if chain:  # chains and after: what it waits for, and what waits for it
        panel.sheets.insert(
            0,
            Sheet(
                "Chain",
                CHAIN_COLUMNS,
                [[link, j["id"], j["rule"], j["action"], j["status"]] for link, j in chain],
            ),
        )
    if history and history[-1].get("output"):
        last = history[-1]
        tail, cut = output_tail(last["output"])
        more = f"; all of it: timeos jobs output {job['id']}" if cut else ""
        panel.text_title = (
            f"Output of attempt {last['number']} (last {OUTPUT_TAIL_LINES} lines{more})"
        )
        panel.text = tail
    return panel


def _delayed(attempt: dict[str, Any]) -> str | None:
    """`6s by rule 'hook' (rate_limit 10/minute, burst 10)`: what held an attempt back."""
    if attempt.get("delayed_ms") is None:
        return None
    delay = format_duration(timedelta(milliseconds=attempt["delayed_ms"]))
    return f"{delay} by {attempt.get('delayed_by')}"


def output_tail(output: str, lines: int = OUTPUT_TAIL_LINES) -> tuple[str, bool]:
    """The last `lines` lines of `output`, and whether anything was left out."""
    kept = output.rstrip("\n").split("\n")
    return "\n".join(kept[-lines:]), len(kept) > lines


EVENT_COLUMNS = [
    Column("id", "id", "id"),
    Column("type", "type", "id"),  # types are what people grep for: never cut
    Column("occurred_at", "occurred_at", "time"),
    Column("received_at", "received_at", "time", wide_only=True),
    Column("idempotency_key", "idempotency key", importance=2),
    Column("payload", "payload", "json", importance=1),
]


def events_sheet(events: list[dict[str, Any]], total: int | None = None, offset: int = 0) -> Sheet:
    """One row per event."""
    rows = [
        [
            e["id"],
            e["type"],
            e["occurred_at"],
            e.get("received_at"),
            e.get("idempotency_key"),
            e["payload"],
        ]
        for e in events
    ]
    return Sheet("Events", EVENT_COLUMNS, rows, total, offset)


def event_panel(event: dict[str, Any]) -> Panel:
    """An event's fields, the jobs it created, its replays and each event rule's verdict."""
    summaries = event.get("job_summaries")
    fields: list[tuple[str, Kind, Any]] = [
        ("type", "text", event["type"]),
        ("occurred_at", "time", event["occurred_at"]),
        ("received_at", "time", event.get("received_at")),
        ("idempotency key", "text", event.get("idempotency_key")),
        ("payload", "json", event["payload"]),
    ]
    if summaries is None:  # an older timeosd: ids only
        fields.append(("jobs", "text", ", ".join(event.get("jobs", [])) or "none"))
    elif not summaries:
        fields.append(("jobs", "text", "none"))
    replays = event.get("replays") or []
    fields.append(("replays", "int", len(replays)))
    sheets: list[Sheet] = []
    if summaries:
        sheets.append(
            Sheet(
                "Jobs",
                EVENT_JOB_COLUMNS,
                [[j["id"], j["rule"], j["status"], j["perform_at"]] for j in summaries],
            )
        )
    if replays:
        sheets.append(
            Sheet("Replays", REPLAY_COLUMNS, [[r["number"], r["at"], r["jobs"]] for r in replays])
        )
    if event.get("matches") is not None:
        sheets.append(
            Sheet(
                "Rules",
                MATCH_COLUMNS,
                [[m["rule"], m["matched"], m["reason"], m.get("detail")] for m in event["matches"]],
            )
        )
    return Panel(f"Event {event['id']}", fields, sheets)


CHAIN_COLUMNS = [
    Column("link", "link"),
    Column("id", "job", "id"),
    Column("rule", "rule", importance=6),
    Column("action", "action", importance=3),
    Column("status", "status", "status"),
]
EVENT_JOB_COLUMNS = [
    Column("id", "job", "id"),
    Column("rule", "rule", importance=6),
    Column("status", "status", "status"),
    Column("perform_at", "perform_at", "time"),
]
REPLAY_COLUMNS = [
    Column("number", "replay", "int"),
    Column("at", "at", "time"),
    Column("jobs", "jobs", "int"),
]
MATCH_COLUMNS = [
    Column("rule", "rule", importance=6),
    Column("matched", "matched", "bool"),
    Column("reason", "reason", "status"),
    Column("detail", "detail", importance=1),
]
PLANNED_COLUMNS = [
    Column("id", "job", "id"),
    Column("rule", "rule", importance=6),
    Column("action", "action", importance=3),
    Column("perform_at", "perform_at", "time"),
    Column("note", "note", importance=1),
]


def replay_sheet(jobs: list[dict[str, Any]]) -> Sheet:
    """The jobs a replay created (or, dry run, would create: no id yet)."""
    rows = [[j["id"] or "-", j["rule"], j["action"], j["perform_at"], j["note"]] for j in jobs]
    return Sheet("Jobs", PLANNED_COLUMNS, rows)


def trigger_text(rule: dict[str, Any]) -> str:
    """`on user_signup +1h`, `cron 0 9 * * 1 (Europe/Paris)`, `every 15m`."""
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


RULE_COLUMNS = [
    Column("name", "name", "id"),
    Column("trigger", "trigger", importance=7),
    Column("action", "action", importance=4),
    Column("priority", "prio", "int", wide_only=True),
    Column("when", "when", importance=1),
    Column("next_fire", "next fire", "time"),
    Column("last", "last", "time"),
    Column("enabled", "enabled", "bool"),
]


def rules_sheet(rules: list[dict[str, Any]]) -> Sheet:
    """One row per rule, with the next fire time of time-based ones."""
    rows = [
        [
            r["name"],
            trigger_text(r),
            r["action"],
            r["priority"],
            r.get("when"),
            r.get("next_fire") if r.get("trigger") != "event" else None,
            last_run(r),
            r.get("enabled", True),
        ]
        for r in rules
    ]
    return Sheet("Rules", RULE_COLUMNS, rows)


def last_run(rule: dict[str, Any]) -> str | None:
    """When the rule last fired or ran (`rules list` LAST): the later of the two."""
    found = [v for v in (rule.get("last_fire"), rule.get("last_run")) if v]
    return max(found, key=datetime.fromisoformat) if found else None


# Folded into the overridable fields' lines of `rules show`.
CONTROL_KEYS = ("overrides", "enabled_from", "disabled_until")


def rule_panel(rule: dict[str, Any]) -> Panel:
    """All fields of one rule, its name first (piped, the title is not printed); an
    overridable value says where it came from (file or override) and the file's value."""
    control = _control(rule.get("overrides") or {})
    fields: list[tuple[str, Kind, Any]] = [("name", "id", rule["name"])]
    for key, value in rule.items():
        if key == "name" or key in CONTROL_KEYS:
            continue
        if key in control:
            fields.append((key, "text", control.pop(key)))
            continue
        kind: Kind = "time" if key in ("next_fire", "last_fire", "last_run") else "text"
        if key == "perform" and isinstance(value, list):  # a perform list, in order
            value = " -> ".join(map(str, value))
        fields.append((key, "bool" if isinstance(value, bool) else kind, value))
    fields += [(key, "text", text) for key, text in control.items()]
    return Panel(f"Rule {rule['name']}", fields)


def _control(overrides: dict[str, Any]) -> dict[str, str]:
    """`enabled: no (override until ...; file: yes)`, `priority: 5 (override; file: 0)`."""
    lines: dict[str, str] = {}
    for key, found in overrides.items():
        if not isinstance(found, dict) or (found.get("value") is None and key != "enabled"):
            continue

        def shown(value: Any) -> str:
            return ("yes" if value else "no") if isinstance(value, bool) else str(value)

        why = found.get("from", "file")
        if found.get("disabled_until"):
            why += f" until {found['disabled_until']}"
        parts = [why]
        if found.get("from") == "override" and found.get("file") is not None:
            parts.append(f"file: {shown(found['file'])}")
        if found.get("note"):
            parts.append(found["note"])
        lines[key] = f"{shown(found['value'])} ({'; '.join(parts)})"
    return lines


def history_sheet(
    name: str, occurrences: list[dict[str, Any]], total: int | None = None, offset: int = 0
) -> Sheet:
    """A time-based rule's occurrences, newest first."""
    return Sheet(
        f"History of {name}",
        [
            Column("scheduled_for", "scheduled for", "time"),
            Column("outcome", "outcome", "status"),
            Column("reason", "reason", importance=3),
            Column("job_id", "job", "id"),
            Column("note", "note", importance=2),
        ],
        [
            [o["scheduled_for"], o["outcome"], o.get("reason"), o.get("job_id"), o.get("note")]
            for o in occurrences
        ],
        total,
        offset,
    )


def fires_sheet(fires: list[dict[str, Any]], now: datetime, label: str, viewer: tzinfo) -> Sheet:
    """Upcoming fire times in the rule's zone (named in the header), in the viewer's zone
    (`viewer`, headed `label`; left out when it shows every fire at the same offset as the
    rule's zone: `UTC` and `Etc/UTC` are one zone by two names), the weekday, time from now
    and DST notes."""
    zones = {f.get("zone") or "UTC" for f in fires}
    rule_zone = zones.pop() if len(zones) == 1 else "UTC"
    columns = [Column("at", f"at ({rule_zone})", "zoned"), Column("weekday", "weekday", "id")]
    instants = [datetime.fromisoformat(f["at"]) for f in fires]
    same = all(
        at.astimezone(ZoneInfo(rule_zone)).utcoffset() == at.astimezone(viewer).utcoffset()
        for at in instants
    )
    if not same:
        columns.append(Column("yours", label, "time"))
    columns += [Column("from_now", "from now", "id"), Column("dst", "DST", importance=1)]
    rows = []
    for fire in fires:
        at = datetime.fromisoformat(fire["at"]).astimezone(UTC)
        local = at.astimezone(ZoneInfo(rule_zone))
        row: list[Any] = [local.isoformat(), local.strftime("%A")]
        if not same:
            row.append(fire["at"])
        row += [from_now(at - now), fire.get("note")]
        rows.append(row)
    return Sheet("Next fire times", columns, rows)


def from_now(delta: timedelta) -> str:
    """`in 2d 3h 5m`, `12m ago`."""
    seconds = int(delta.total_seconds())
    sign = "in " if seconds >= 0 else ""
    return sign + duration(abs(seconds), seconds=False) + ("" if sign else " ago")


def duration(total: int, *, seconds: bool = True) -> str:
    """`3d 4h 12m 5s`, largest unit first (`seconds=False`: down to minutes)."""
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if hours or days:
        parts.append(f"{hours}h")
    parts.append(f"{minutes}m")
    if seconds:
        parts.append(f"{secs}s")
    return " ".join(parts)


def health_panel(health: dict[str, Any]) -> Panel:
    """Overall status, components and job counts."""
    components = Sheet(
        "Components",
        [
            Column("component", "component", "id"),
            Column("status", "status", "status"),
            Column("message", "detail", importance=1),
        ],
        [[name, c["status"], c.get("message", "")] for name, c in health["components"].items()],
    )
    counts = Sheet(
        "Jobs",
        [Column("status", "status", "status"), Column("count", "count", "int")],
        [[k, v] for k, v in health.get("jobs", {}).items()],
    )
    sheets = [components, counts]
    daemons = health["components"].get("database", {}).get("daemons")
    if daemons is not None:  # a shared (PostgreSQL) database: who shares it
        sheets.append(
            Sheet(
                "Daemons",
                [
                    Column("id", "daemon", "id"),
                    Column("host", "host", importance=4),
                    Column("pid", "pid", "int", importance=2),
                    Column("heartbeat_at", "last heartbeat", "time"),
                    Column("alive", "alive", "bool"),
                    Column("fingerprint", "rules", importance=3),
                ],
                [
                    [d["id"], d["host"], d["pid"], d["heartbeat_at"], d["alive"], _short(d)]
                    for d in daemons
                ],
            )
        )
    return Panel("Health", [("status", "status", health["status"])], sheets)


def _short(daemon: dict[str, Any]) -> str | None:
    """A daemon's rules fingerprint, its first 12 hex digits (enough to tell two apart)."""
    fingerprint = daemon.get("fingerprint")
    return fingerprint[:12] if fingerprint else None


def cleanup_sheet(result: dict[str, Any]) -> Sheet:
    """Rows removed (or, in a dry run, that would be) per kind."""
    title = "Would remove (dry run)" if result.get("dry_run") else "Removed"
    return Sheet(
        title,
        [Column("kind", "kind", "id"), Column("count", "count", "int")],
        [[kind, result[kind]] for kind in ("events", "jobs", "attempts", "occurrences")],
    )


def status_panel(status: dict[str, Any]) -> Panel:
    """The daemon's facts: uptime as a duration, paths absolute (as the daemon reports them)."""
    fields: list[tuple[str, Kind, Any]] = [
        ("up", "bool", status.get("up", True)),
        ("version", "text", status.get("version")),
        ("pid", "int", status.get("pid")),
        ("socket", "text", status.get("socket")),
        ("database", "text", status.get("database")),
        ("synchronous", "text", status.get("synchronous")),
        ("rule files", "text", ", ".join(status.get("rule_files", [])) or None),
        ("rules", "int", status.get("rules")),
        ("actions", "int", status.get("actions")),
        ("workers", "int", status.get("workers")),
        ("started_at", "time", status.get("started_at")),
        ("uptime", "text", duration(int(status.get("uptime_seconds") or 0))),
        ("reloads", "int", status.get("reloads")),
    ]
    return Panel("timeosd is up", fields)


WATCH_SKIP = {"kind", "at", "event_id", "job_id", "rule"}


def watch_line(event: dict[str, Any], view: View | None) -> str:
    """One lifecycle event of `timeos watch` as a line for people: time, kind, ids, facts."""
    from timeos.cli.table import cell_text

    at = cell_text(event.get("at"), "zoned", view) if view is not None else event.get("at")
    parts = [str(at), f"{event.get('kind', '?'):<18}"]
    for key, label in (("rule", "rule"), ("job_id", "job"), ("event_id", "event")):
        if event.get(key):
            parts.append(f"{label}={event[key]}")
    for key, value in event.items():
        if key not in WATCH_SKIP and value is not None:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            parts.append(f"{key}={text}" if " " not in text else f"{key}={json.dumps(text)}")
    return " ".join(parts)
