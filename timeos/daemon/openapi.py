"""The API's description: endpoint records, the JSON Schemas of its bodies, the OpenAPI document.

api.py declares its routes once as `Endpoint`s; both the Starlette routes and `/openapi.json` are
built from that table, so the document cannot drift from what is served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from timeos.errors import ALL_ERRORS
from timeos.model import JobStatus

Schema = dict[str, Any]
Handler = Callable[[Request], Awaitable[Response]]

OPENAPI_VERSION = "3.1.0"


@dataclass(frozen=True, slots=True)
class Param:
    """One path or query parameter."""

    name: str
    where: str  # "path" or "query"
    schema: Schema
    description: str

    def to_openapi(self) -> Schema:
        """Render as an OpenAPI Parameter Object (path parameters are always required)."""
        return {
            "name": self.name,
            "in": self.where,
            "required": self.where == "path",
            "description": self.description,
            "schema": self.schema,
        }


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One operation: what is served at `method path`, and what it takes and answers."""

    method: str
    path: str
    handler: Handler
    summary: str
    ok: Mapping[int, tuple[str, Schema]]  # success status -> (description, body schema)
    params: tuple[Param, ...] = ()
    body: Schema | None = None
    errors: tuple[int, ...] = ()  # error statuses besides 500, answered with the Error envelope
    tags: tuple[str, ...] = ()
    paged: bool = False  # a list: its answer carries X-Total-Count, every row matching the filters
    media: str = "application/json"  # of the success answers (/metrics: text, /v1/watch: SSE)


def ref(name: str) -> Schema:
    """A `$ref` to a shared schema under components/schemas."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """`schema` or null (JSON Schema 2020-12, as OpenAPI 3.1 uses it)."""
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: tuple[str, ...] = (), **properties: Schema) -> Schema:
    """An object schema; further fields may be added later without breaking clients."""
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
INSTANT: Schema = {"type": "string", "format": "date-time"}
DURATION: Schema = {"type": "string", "description": "a duration such as 30s, 15m, 1h30m, 2d"}
PAYLOAD: Schema = {"type": "object", "description": "any JSON object"}
HEALTH: Schema = {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]}


def _job() -> Schema:
    return obj(
        (
            "id", "rule", "action", "status", "priority", "perform_at", "attempts",
            "max_attempts", "event_id", "last_error", "scheduled_for", "created_at",
            "updated_at", "payload", "depends_on",
        ),
        id=STR,
        rule=STR,
        action=STR,
        status={"type": "string", "enum": [str(s) for s in JobStatus]},
        priority=INT,
        perform_at=INSTANT,
        attempts=INT,
        max_attempts=INT,
        event_id=nullable(STR),
        last_error=nullable(STR),
        cancelled_by=nullable({"type": "string", "description": "cancel_on: the event's id"}),
        scheduled_for=nullable(INSTANT),
        created_at=INSTANT,
        updated_at=INSTANT,
        payload=PAYLOAD,
        depends_on={"type": "array", "items": STR,
                    "description": "ids of the jobs it waits for (chains, after:)"},
        attempt_history={"type": "array", "items": ref("Attempt")},
        parents={"type": "array", "items": ref("ChainJob"),
                 "description": "GET /v1/jobs/{id}: the jobs it waits for"},
        children={"type": "array", "items": ref("ChainJob"),
                  "description": "GET /v1/jobs/{id}: the jobs waiting for it"},
    )  # fmt: skip


def _rule() -> Schema:
    return obj(
        ("name", "action", "priority", "enabled", "when", "timezone", "where", "trigger"),
        name=STR,
        action=STR,
        priority=INT,
        enabled=BOOL,
        when=nullable(STR),
        timezone={"type": "string", "description": "IANA zone, e.g. Europe/Berlin"},
        where={"type": "string", "description": "file:line:col where the rule is defined"},
        trigger={"type": "string", "enum": ["event", "cron", "every"]},
        on_event=STR,
        after={**STR, "description": "the event rule whose job this rule's job waits for"},
        perform={
            "type": "array",
            "items": STR,
            "description": "a perform list's actions in order (action is the first)",
        },
        offset=DURATION,
        at=nullable({"type": "string", "description": "HH:MM"}),
        cron=STR,
        schedule={"type": "string", "description": "the weekday schedule as written"},
        every=DURATION,
        retry=obj(
            ("max_attempts", "backoff", "max_backoff"),
            max_attempts=INT,
            backoff=DURATION,
            max_backoff=DURATION,
        ),
        on_missed=STR,
        overlap=STR,
        grace=nullable(DURATION),
        dst=obj(("gap", "fold"), gap=STR, fold=STR),
        cancel_on={
            "type": "array",
            "description": "event rules: the events that cancel its waiting jobs",
            "items": obj(("event", "match"), event=STR, match=STR),
        },
        debounce=obj(
            ("key", "period", "max_wait"), key=STR, period=DURATION, max_wait=nullable(DURATION)
        ),
        next_fire=nullable(INSTANT),
        last_fire=nullable(INSTANT),
        last_run=nullable({**INSTANT, "description": "when the rule last created a job"}),
        enabled_from={"type": "string", "enum": ["file", "override"]},
        disabled_until=nullable(
            {**INSTANT, "description": "a runtime disable with --for ends then"}
        ),
        rate_limit=nullable({"type": "string", "description": "COUNT/UNIT in force"}),
        burst=nullable({**INT, "description": "token bucket size (default: COUNT)"}),
        concurrency=nullable({**INT, "description": "at most this many jobs running at once"}),
        action_limits=obj(
            ("rate_limit", "burst", "concurrency"),
            rate_limit=nullable(STR),
            burst=nullable(INT),
            concurrency=nullable(INT),
        ),
        overrides=obj(
            ("enabled", "priority", "rate_limit", "burst", "concurrency"),
            enabled=_overridden(BOOL, disabled_until=nullable(INSTANT)),
            priority=_overridden(INT),
            rate_limit=_overridden(nullable(STR)),
            burst=_overridden(nullable(INT)),
            concurrency=_overridden(nullable(INT)),
        ),
    )


def _overridden(value: Schema, **more: Schema) -> Schema:
    """A value in force, where it came from, and the rule file's value."""
    return obj(
        ("value", "from", "file"),
        value=value,
        file=nullable(value),
        **{"from": {"type": "string", "enum": ["file", "override"]}},
        **more,
    )


def _error() -> Schema:
    codes = sorted({cls.code for cls in ALL_ERRORS})
    return obj(
        ("error",),
        error=obj(
            ("code", "message"),
            code={"type": "string", "enum": codes, "description": "stable; see timeos(1)"},
            message=STR,
            problems={
                "type": "array",
                "items": STR,
                "description": "rules_invalid only: one file:line:col: message per problem",
            },
        ),
    )


COMPONENTS: dict[str, Schema] = {
    "Error": _error(),
    "Job": _job(),
    "JobWithHistory": {
        "allOf": [ref("Job"), {"required": ["attempt_history", "parents", "children"]}]
    },
    "ChainJob": obj(
        ("id", "rule", "action", "status"),
        id=STR,
        rule=STR,
        action=STR,
        status={"type": "string", "enum": [str(s) for s in JobStatus]},
    ),
    "Attempt": obj(
        ("number", "started_at", "ended_at", "outcome", "error", "output", "stderr"),
        delayed_ms=nullable({**INT, "description": "how long a limit held it back"}),
        delayed_by=nullable({**STR, "description": "the rate limit or concurrency that did"}),
        number=INT,
        started_at=INSTANT,
        ended_at=nullable(INSTANT),
        outcome=nullable(STR),
        error=nullable(STR),
        output=nullable(STR),
        stderr=nullable(STR),
    ),
    "Event": obj(
        ("id", "type", "payload", "occurred_at", "received_at", "idempotency_key"),
        id=STR,
        type=STR,
        payload=PAYLOAD,
        occurred_at=INSTANT,
        received_at=INSTANT,
        idempotency_key=nullable(STR),
    ),
    "EventWithJobs": {
        "allOf": [
            ref("Event"),
            obj(
                ("jobs",),
                jobs={"type": "array", "items": STR, "description": "job ids"},
                job_summaries={
                    "type": "array",
                    "description": "the jobs it created (replays' too), with their statuses",
                    "items": obj(
                        ("id", "rule", "action", "status", "perform_at"),
                        id=STR,
                        rule=STR,
                        action=STR,
                        status=STR,
                        perform_at=INSTANT,
                    ),
                },
                matches={
                    "type": "array",
                    "description": "every loaded event rule's verdict on this event now",
                    "items": ref("Match"),
                },
                replays={"type": "array", "items": ref("Replay")},
            ),
        ]
    },
    "Match": obj(
        ("rule", "matched", "reason"),
        rule=STR,
        matched=BOOL,
        reason={
            "type": "string",
            "enum": [
                "matched",
                "other_type",
                "condition_false",
                "condition_error",
                "rule_disabled",
                "after_unmatched",
            ],
        },
        detail=nullable(
            {
                "type": "string",
                "description": "condition_error: the error; after_unmatched: the `after` rule",
            }
        ),
    ),
    "Replay": obj(
        ("number", "at", "jobs"),
        number={"type": "integer", "description": "1 for the first replay of the event"},
        at=INSTANT,
        jobs={"type": "integer", "description": "how many jobs it created"},
    ),
    "Rule": _rule(),
    "Fire": obj(
        ("at", "at_local", "local", "zone", "note"),
        at=INSTANT,
        at_local=INSTANT,
        local=INSTANT,
        zone=STR,
        note=nullable(STR),
    ),
    "Occurrence": obj(
        ("scheduled_for", "outcome", "reason", "job_id", "note", "recorded_at"),
        scheduled_for=INSTANT,
        outcome=STR,
        reason=nullable(STR),
        job_id=nullable(STR),
        note=nullable(STR),
        recorded_at=INSTANT,
    ),
}


COMPONENTS.update(
    EmitResult=obj(
        ("id", "duplicate", "jobs", "cancelled", "debounced"),  # emit_json always sends all
        id={"type": "string", "description": "the event id (the first one's, for a duplicate)"},
        duplicate=BOOL,
        jobs={"type": "array", "items": STR, "description": "ids of the jobs created"},
        cancelled={
            "type": "array",
            "items": STR,
            "description": "waiting jobs its rules' cancel_on cancelled",
        },
        debounced={
            "type": "array",
            "items": STR,
            "description": "waiting jobs that took its payload (debounce) instead of new ones",
        },
    ),
    CancelResults=obj(
        ("results",),
        results={
            "type": "array",
            "items": obj(
                ("id", "cancelled", "status", "error"),
                id=STR,
                cancelled=BOOL,
                status=nullable(STR),
                error=nullable(STR),
            ),
        },
    ),
    BatchResults=obj(
        ("results",),
        results={"type": "array", "items": ref("EmitResult")},
    ),
    Replayed=obj(
        ("event", "replay", "dry_run", "jobs"),
        event=ref("Event"),
        replay=nullable(ref("Replay")),
        dry_run=BOOL,
        jobs={
            "type": "array",
            "items": obj(
                ("id", "rule", "action", "perform_at", "priority", "note"),
                id=nullable({"type": "string", "description": "null in a dry run"}),
                rule=STR,
                action=STR,
                perform_at=INSTANT,
                priority=INT,
                note=nullable(STR),
            ),
        },
    ),
    CancelledMatching=obj(
        ("cancelled", "ids", "killed"),
        cancelled={"type": "integer", "description": "how many waiting jobs were cancelled"},
        ids={"type": "array", "items": STR, "description": "the waiting jobs cancelled"},
        killed={"type": "array", "items": STR, "description": "running jobs stopped (kill)"},
    ),
    BulkResults=obj(
        ("results",),
        results={
            "type": "array",
            "items": obj(("id", "ok", "error"), id=STR, ok=BOOL, error=nullable(STR)),
        },
    ),
    Reloaded=obj(
        ("reloaded", "rules"),
        reloaded={"const": True},
        rules={"type": "integer", "description": "how many rules are now loaded"},
        warnings={
            "type": "array",
            "items": STR,
            "description": "file:line:col: message, e.g. a command that is not executable",
        },
    ),
    Status=obj(
        ("up", "started_at", "uptime_seconds", "now", "rules", "actions", "rule_files", "reloads"),
        version=STR,
        pid=INT,
        socket=STR,
        database=STR,
        synchronous=STR,
        workers=INT,
        up=BOOL,
        started_at=INSTANT,
        uptime_seconds={"type": "number"},
        now=INSTANT,
        rules=INT,
        actions=INT,
        rule_files={"type": "array", "items": STR},
        reloads=INT,
    ),
    Cleanup=obj(
        ("dry_run", "events", "jobs", "attempts", "occurrences"),
        dry_run=BOOL,
        events=INT,
        jobs=INT,
        attempts=INT,
        occurrences=INT,
    ),
    Health=obj(
        ("status", "components", "jobs"),
        status=HEALTH,
        components={
            "type": "object",
            "additionalProperties": obj(("status", "message"), status=HEALTH, message=STR),
        },
        jobs={"type": "object", "additionalProperties": INT, "description": "count per status"},
    ),
)


def listing(key: str, item: Schema) -> Schema:
    """A `{key: [item, ...]}` page."""
    return obj((key,), **{key: {"type": "array", "items": item}})


# ---- parameters and request bodies, named in api.py's table ------------------------------------

ID_P = Param("id", "path", STR, "a job or event id")
NAME_P = Param("name", "path", STR, "a rule name")
LIMIT_Q = Param(
    "limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
    "rows per page",
)  # fmt: skip
OFFSET_Q = Param(
    "offset", "query", {"type": "integer", "minimum": 0, "maximum": 999_999_999, "default": 0},
    "rows to skip",
)  # fmt: skip
EVENT_TYPE_Q = Param("type", "query", STR, "only events of this type")
STATUS_Q = Param(
    "status", "query", {"type": "string", "enum": [str(s) for s in JobStatus]},
    "only jobs in this state",
)  # fmt: skip
RULE_Q = Param("rule", "query", STR, "only jobs of this rule")
EVENT_Q = Param("event", "query", STR, "only jobs of this event id")
AFTER_Q = Param("after", "query", INSTANT, "fires strictly after this instant (default: now)")
COUNT_Q = Param(
    "count", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 5},
    "how many fire times",
)  # fmt: skip

ORDER_Q = Param(
    "order", "query", {"type": "string", "enum": ["perform_at", "waiting_first"],
                       "default": "perform_at"},
    "perform_at: by perform time; waiting_first: running, then waiting (next due first), then"
    " finished (newest first)",
)  # fmt: skip
WATCH_RULE_Q = Param("rule", "query", STR, "only lifecycle events of this rule")
WATCH_TYPE_Q = Param(
    "type", "query", STR,
    "only lifecycle events of this kind (job.dead) or kind prefix ending in a dot (job.)",
)  # fmt: skip
WATCH_STREAM: Schema = {
    "type": "string",
    "description": (
        "server-sent events: per lifecycle event an `event: KIND` line and a `data:` line of"
        " JSON (kind, at, event_id, job_id, rule, and attempt/error/duration_ms/... where they"
        " apply), then a blank line; `watch.dropped` (data: count) where a slow reader lost"
        " events"
    ),
}
METRICS_TEXT: Schema = {
    "type": "string",
    "description": "Prometheus text exposition format 0.0.4",
}
TOTAL_HEADER: Schema = {
    "description": "how many rows match the filters, over all pages",
    "schema": {"type": "integer", "minimum": 0},
}

EMIT_BODY = obj(
    ("type",),
    type={"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[A-Za-z0-9_.:-]+$"},
    payload=PAYLOAD,
    idempotency_key={"type": "string", "description": "same key + same payload = same event"},
    occurred_at={**INSTANT, "description": "when it happened (default: when received)"},
)
DISABLE_BODY = obj(
    (), **{"for": {**DURATION, "description": "enable again after this long (default: never)"}}
)
OVERRIDES_BODY = obj(
    (),
    priority={"type": "integer", "minimum": -1_000_000, "maximum": 1_000_000},
    rate_limit={"type": "string", "description": "COUNT/UNIT, e.g. 10/minute (burst: COUNT)"},
    concurrency={"type": "integer", "minimum": 1, "description": "jobs of the rule at once"},
)
RUN_BODY = obj((), payload=PAYLOAD)
SINCE_Q = Param(
    "since", "query", INSTANT, "only events received at or after this instant (ISO 8601)"
)
UNTIL_Q = Param("until", "query", INSTANT, "only events received before this instant (ISO 8601)")
BATCH_BODY = obj(
    ("events",),
    events={
        "type": "array",
        "maxItems": 100_000,
        "items": EMIT_BODY,
        "description": "at most 100,000 events and 64 times the payload limit (64 MiB) per"
        " request; all are stored in one transaction, or none (every bad one is reported)",
    },
)
REPLAY_BODY = obj((), dry_run={**BOOL, "description": "create nothing; list the jobs it would"})
CANCEL_MATCHING_BODY = obj(
    ("rule",),
    rule=STR,
    status={"type": "string", "enum": ["pending", "retrying", "blocked", "running"],
            "description": "only jobs in this state (running needs kill)"},
    event={**STR, "description": "only jobs of this event id"},
    kill={**BOOL, "description": "also stop running jobs; they are recorded cancelled"},
)  # fmt: skip
BULK_DLQ_BODY = obj(
    (),
    ids={"type": "array", "items": STR, "minItems": 1, "maxItems": 1000},
    all={**BOOL, "description": "every dead job (of `rule`) instead of ids"},
    rule={**STR, "description": "with all: only this rule's dead jobs"},
)
CANCEL_BODY = obj(("ids",), ids={"type": "array", "items": STR, "minItems": 1})
CLEANUP_BODY = obj(
    (),
    older_than={**DURATION, "description": "remove what is older than this (default: retention)"},
    statuses={
        "type": "array",
        "items": {"type": "string", "enum": ["succeeded", "cancelled", "dead"]},
        "description": "only jobs in these states (default, without events: succeeded, cancelled)",
    },
    events={**BOOL, "description": "events too (alone: only events)"},
    dry_run={**BOOL, "description": "count, remove nothing"},
    vacuum={**BOOL, "description": "VACUUM afterwards; writes wait for it meanwhile"},
)


def _error_response(status: int) -> Schema:
    return {
        "description": HTTPStatus(status).phrase,
        "content": {"application/json": {"schema": ref("Error")}},
    }


def _operation(endpoint: Endpoint) -> Schema:
    operation: Schema = {
        "operationId": endpoint.handler.__name__,
        "summary": endpoint.summary,
    }
    if endpoint.tags:
        operation["tags"] = list(endpoint.tags)
    if endpoint.params:
        operation["parameters"] = [p.to_openapi() for p in endpoint.params]
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": endpoint.body}},
        }
    responses: dict[str, Schema] = {
        str(status): {"description": text, "content": {endpoint.media: {"schema": schema}}}
        for status, (text, schema) in endpoint.ok.items()
    }
    if endpoint.paged:
        for answer in responses.values():
            answer["headers"] = {"X-Total-Count": TOTAL_HEADER}
    for status in (*endpoint.errors, 500):
        responses[str(status)] = {"$ref": f"#/components/responses/{status}"}
    operation["responses"] = responses
    return operation


def openapi_document(endpoints: tuple[Endpoint, ...], title: str, version: str) -> Schema:
    """Build the OpenAPI 3.1 document that describes `endpoints`."""
    paths: dict[str, dict[str, Schema]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    statuses = sorted({s for e in endpoints for s in e.errors} | {500})
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": (
                "timeosd's HTTP/JSON API on its Unix socket. Every error answers with the "
                "Error envelope and a stable code; a wrong method answers 405 with an Allow "
                "header, an unknown path 404."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": COMPONENTS,
            "responses": {str(s): _error_response(s) for s in statuses},
        },
    }
