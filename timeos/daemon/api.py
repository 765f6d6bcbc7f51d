"""The HTTP/JSON API served on the Unix socket (and, later, to the web dashboard).

Routes are thin: validate the request once, call Service, render model objects as JSON.
Errors are `{"error": {"code", "message"}}` with the stable codes of errors.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from timeos import __version__
from timeos.daemon.flow import BATCH_BODY_FACTOR, BulkOutcome, describe_matches
from timeos.daemon.metrics import CONTENT_TYPE as METRICS_TYPE
from timeos.daemon.openapi import (
    AFTER_Q,
    BATCH_BODY,
    BOOL,
    BULK_DLQ_BODY,
    CANCEL_BODY,
    CANCEL_MATCHING_BODY,
    CLEANUP_BODY,
    COUNT_Q,
    DISABLE_BODY,
    EMIT_BODY,
    EVENT_Q,
    EVENT_TYPE_Q,
    ID_P,
    LIMIT_Q,
    METRICS_TEXT,
    NAME_P,
    OFFSET_Q,
    ORDER_Q,
    OVERRIDES_BODY,
    REPLAY_BODY,
    RULE_Q,
    RUN_BODY,
    SINCE_Q,
    STATUS_Q,
    STR,
    UNTIL_Q,
    WATCH_RULE_Q,
    WATCH_STREAM,
    WATCH_TYPE_Q,
    Endpoint,
    Handler,
    listing,
    obj,
    openapi_document,
    ref,
)
from timeos.daemon.service import Service
from timeos.daemon.sse import MEDIA_TYPE as SSE_TYPE
from timeos.daemon.sse import EventStream
from timeos.engine import Limits, check_payload
from timeos.errors import MethodNotAllowed, NotFound, PayloadError, TimeOSError, UsageError
from timeos.model import (
    Attempt,
    CronTrigger,
    EmitResult,
    Event,
    EventTrigger,
    IntervalTrigger,
    Job,
    NewJob,
    RateLimit,
    Replay,
    Rule,
)
from timeos.payload import encoded_size, nesting_depth, parse_json
from timeos.timefmt import format_duration, iso, parse_duration, parse_instant

log = logging.getLogger("timeos.api")

# ---- JSON shapes ------------------------------------------------------------------------------


def job_json(job: Job, attempts: list[Attempt] | None = None) -> dict[str, Any]:
    """The wire form of a job (a contract: scripts read these fields)."""
    body: dict[str, Any] = {
        "id": job.id,
        "rule": job.rule,
        "action": job.action,
        "status": str(job.status),
        "priority": job.priority,
        "perform_at": iso(job.perform_at),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "event_id": job.event_id,
        "last_error": job.last_error,
        "note": job.note,
        "cancelled_by": job.cancelled_by,
        "scheduled_for": iso(job.scheduled_for),
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "payload": job.payload,
        "depends_on": list(job.depends_on),
    }
    if attempts is not None:
        body["attempt_history"] = [
            {
                "number": a.number,
                "started_at": iso(a.started_at),
                "ended_at": iso(a.ended_at),
                "outcome": str(a.outcome) if a.outcome else None,
                "error": a.error,
                "output": a.output,
                "stderr": a.stderr,
                "delayed_ms": a.delayed_ms,
                "delayed_by": a.delayed_by,
            }
            for a in attempts
        ]
    return body


def emit_json(result: EmitResult) -> dict[str, Any]:
    """The wire form of what an emit did (cancelled, debounced: its cancel_on and debounce)."""
    return {
        "id": result.event_id,
        "duplicate": result.duplicate,
        "jobs": list(result.job_ids),
        "cancelled": list(result.cancelled),
        "debounced": list(result.debounced),
    }


def event_json(event: Event) -> dict[str, Any]:
    """The wire form of an event."""
    return {
        "id": event.id,
        "type": event.type,
        "payload": event.payload,
        "occurred_at": iso(event.occurred_at),
        "received_at": iso(event.received_at),
        "idempotency_key": event.idempotency_key,
    }


def rule_json(rule: Rule) -> dict[str, Any]:
    """The wire form of a loaded rule."""
    trigger = rule.trigger
    body: dict[str, Any] = {
        "name": rule.name,
        "action": rule.action,
        "priority": rule.priority,
        "enabled": rule.enabled,
        "when": rule.condition.source if rule.condition else None,
        "timezone": rule.timezone.key,
        "where": rule.where,
    }
    if isinstance(trigger, EventTrigger):
        body["trigger"] = "event"
        body["on_event"] = trigger.event_type
        body["offset"] = format_duration(trigger.offset)
        body["at"] = trigger.at.strftime("%H:%M") if trigger.at else None
        if rule.cancel_on:
            body["cancel_on"] = [{"event": c.event, "match": c.match} for c in rule.cancel_on]
        if rule.debounce is not None:
            wait = rule.debounce.max_wait
            body["debounce"] = {
                "key": rule.debounce.key,
                "period": format_duration(rule.debounce.period),
                "max_wait": format_duration(wait) if wait is not None else None,
            }
        if rule.after is not None:
            body["after"] = rule.after
    elif isinstance(trigger, CronTrigger):
        body["trigger"] = "cron"
        body["cron"] = trigger.expression
        if trigger.label:
            body["schedule"] = trigger.label
    elif isinstance(trigger, IntervalTrigger):
        body["trigger"] = "every"
        body["every"] = format_duration(trigger.every)
    if rule.then:  # a perform list: every action, in order (`action` is the first)
        body["perform"] = list(rule.performs)
    if rule.retry:
        body["retry"] = {
            "max_attempts": rule.retry.max_attempts,
            "backoff": format_duration(rule.retry.backoff),
            "max_backoff": format_duration(rule.retry.max_backoff),
        }
    body.update(limits_json(rule.rate_limit, rule.concurrency))
    if rule.time_based:
        body["on_missed"] = str(rule.on_missed)
        body["overlap"] = str(rule.overlap)
        body["grace"] = format_duration(rule.grace) if rule.grace else None
        body["dst"] = {"gap": str(rule.dst.gap), "fold": str(rule.dst.fold)}
    return body


def limits_json(rate: RateLimit | None, concurrency: int | None) -> dict[str, Any]:
    """A rule's or action's limits in force, on the wire."""
    return {
        "rate_limit": rate.spec if rate else None,
        "burst": rate.burst if rate else None,
        "concurrency": concurrency,
    }


# ---- request helpers --------------------------------------------------------------------------


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise UsageError(f"query parameter {name!r} must be a whole number below 10^9, got {raw!r}")
    return int(raw)


# Bodies larger than this are parsed in a worker thread: json.loads and the depth scan of a
# near-1 MiB payload took 0.2 s, and on the event loop that time is taken from the scheduler
# and every other request. Small bodies (nearly all) stay on the loop, where they are cheaper.
OFFLOAD_BODY_BYTES = 64 * 1024


async def _json_body(request: Request, service: Service) -> dict[str, Any]:
    limits = service.limits
    raw = await _capped_body(request, limits.max_payload_bytes + 64 * 1024)
    if not raw:
        return {}
    if len(raw) > OFFLOAD_BODY_BYTES:
        return await asyncio.to_thread(_parse_body, raw, limits)
    return _parse_body(raw, limits)


def _parse_body(raw: bytes, limits: Limits) -> dict[str, Any]:
    """Check and parse a request body (pure: safe to run in a worker thread)."""
    # Size and depth are checked on the text before json.loads: a hostile body fails cheaply,
    # and the error speaks of the payload (the body wraps it one level deep).
    if len(raw) > limits.max_payload_bytes + 64 * 1024:
        raise PayloadError(
            f"payload: {len(raw)} bytes is over the limit of {limits.max_payload_bytes} bytes"
        )
    depth = nesting_depth(raw.decode("utf-8", errors="replace")) - 1
    if depth > limits.max_payload_depth:
        raise PayloadError(
            f"payload: nested {depth} levels deep, over the limit of {limits.max_payload_depth}"
        )
    body = check_payload(
        raw,
        replace(limits, max_payload_bytes=len(raw), max_payload_depth=depth + 1),
        "request body",
    )
    payload = body.get("payload")
    if isinstance(payload, dict) and (size := encoded_size(payload)) > limits.max_payload_bytes:
        raise PayloadError(
            f"payload: {size} bytes is over the limit of {limits.max_payload_bytes} bytes"
        )
    return body


async def _capped_body(request: Request, cap: int) -> bytes:
    """The request body, refused as soon as it grows past `cap` (never buffered whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise PayloadError(f"payload: request of {declared} bytes is over the limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise PayloadError(f"payload: request over {cap} bytes is over the limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _batch_body(request: Request, service: Service) -> list[Any]:
    """The `events` list of a batch request; big bodies are parsed in a worker thread."""
    limits = service.limits
    raw = await _capped_body(request, limits.max_payload_bytes * BATCH_BODY_FACTOR)
    if len(raw) > OFFLOAD_BODY_BYTES:
        return await asyncio.to_thread(_parse_batch, raw, limits)
    return _parse_batch(raw, limits)


def _parse_batch(raw: bytes, limits: Limits) -> list[Any]:
    """Check and parse a batch body (pure: safe to run in a worker thread)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"request body: not UTF-8 (byte {exc.start})") from None
    # Not parse_object: its second pass (a dumps to find lone surrogates) would cost 0.4 s on
    # 100,000 events; the service encodes every payload anyway and refuses them there. Depth is
    # measured after parsing (json.loads refuses deep nesting with RecursionError, it does not
    # crash; CEL would): nesting_depth's character loop took 1.5 s on 8 MB, the walk 0.05 s.
    try:
        body = parse_json(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"request body: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise PayloadError("request body: JSON nested too deeply") from None
    except ValueError as exc:
        raise PayloadError(f"request body: {exc}") from None
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list):
        raise PayloadError("request body needs 'events': a list of events")
    for n, event in enumerate(events):
        payload = event.get("payload") if isinstance(event, dict) else None
        if isinstance(payload, dict) and (depth := _depth(payload)) > limits.max_payload_depth:
            raise PayloadError(
                f"events[{n}]: payload nested {depth} levels deep, over the limit of"
                f" {limits.max_payload_depth}"
            )
    return events


def _depth(value: dict[str, Any] | list[Any]) -> int:
    """How deeply objects and arrays nest in a parsed value (a flat object: 1)."""
    deepest = 1
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                deepest = max(deepest, depth + 1)
                stack.append((child, depth + 1))
    return deepest


def _bulk_json(outcomes: list[BulkOutcome]) -> dict[str, Any]:
    return {"results": [{"id": o.id, "ok": o.ok, "error": o.error} for o in outcomes]}


def _bulk_target(body: dict[str, Any]) -> tuple[list[str] | None, str | None]:
    """(ids, None) or (None, rule or None) from a dlq retry/delete body."""
    ids, every, rule = body.get("ids"), body.get("all", False), body.get("rule")
    if rule is not None and not isinstance(rule, str):
        raise UsageError("rule must be a string")
    if every is True and ids is None:
        return None, rule
    if every is not False or rule is not None:
        raise UsageError("give 'ids' or 'all': true (with an optional 'rule'), not both")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise UsageError("request body needs 'ids': a non-empty list of job ids, or 'all': true")
    return ids, None


def _planned_json(job: NewJob | Job) -> dict[str, Any]:
    """A job a replay created (or, dry run, would create: no id)."""
    return {
        "id": job.id if isinstance(job, Job) else None,
        "rule": job.rule,
        "action": job.action,
        "perform_at": iso(job.perform_at),
        "priority": job.priority,
        "note": job.note,
    }


def _replay_json(replay: Replay) -> dict[str, Any]:
    return {"number": replay.number, "at": iso(replay.at), "jobs": replay.jobs}


def _instant(raw: str | None, name: str) -> Any:
    return parse_instant(raw, name) if raw else None


def _page(body: dict[str, Any], total: int) -> Response:
    """A page of a list; X-Total-Count says how many match in all (the body stays as it was)."""
    return JSONResponse(body, headers={"X-Total-Count": str(total)})


def _guard(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except TimeOSError as exc:
            return JSONResponse(exc.to_wire(), status_code=exc.http_status)
        except Exception as exc:  # one bad request must not take the daemon down
            log.exception("request %s %s failed", request.method, request.url.path)
            err = TimeOSError(f"internal error: {type(exc).__name__}: {exc}")
            return JSONResponse(err.to_wire(), status_code=500)

    wrapped.__doc__ = handler.__doc__
    wrapped.__name__ = handler.__name__
    return wrapped


# ---- routes -----------------------------------------------------------------------------------


def build_app(service: Service, extra_routes: list[Route] | None = None) -> Api:
    """The Starlette application for one daemon."""

    async def emit(request: Request) -> Response:
        body = await _json_body(request, service)
        event_type = body.get("type")
        if not isinstance(event_type, str):
            raise PayloadError("request body needs a string field 'type'")
        payload = body.get("payload", {})
        if not isinstance(payload, dict):
            raise PayloadError(f"payload must be a JSON object, got {type(payload).__name__}")
        key = body.get("idempotency_key")
        if key is not None and not isinstance(key, str):
            raise PayloadError("idempotency_key must be a string")
        occurred_raw = body.get("occurred_at")
        occurred_at = None
        if occurred_raw is not None:
            occurred_at = parse_instant(str(occurred_raw), "occurred_at", PayloadError)
        # Answered once stored: committed with the emits that arrived alongside (group commit).
        result = await service.emit_soon(
            event_type, payload, idempotency_key=key, occurred_at=occurred_at
        )
        return JSONResponse(emit_json(result), status_code=200 if result.duplicate else 201)

    async def emit_batch(request: Request) -> Response:
        events = await _batch_body(request, service)
        # Planning and the one transaction of up to 100,000 events run in a worker thread: on
        # the event loop they would stall the scheduler and every other request meanwhile.
        results = await asyncio.to_thread(service.emit_batch, events)
        return JSONResponse({"results": [emit_json(r) for r in results]})

    async def list_events(request: Request) -> Response:
        event_type = request.query_params.get("type")
        q = request.query_params
        since, until = _instant(q.get("since"), "since"), _instant(q.get("until"), "until")
        events = service.list_events(
            event_type,
            _int_param(request, "limit", 50),
            _int_param(request, "offset", 0),
            since=since,
            until=until,
        )
        total = service.count_events(event_type, since=since, until=until)
        return _page({"events": [event_json(e) for e in events]}, total)

    async def show_event(request: Request) -> Response:
        event = service.get_event(request.path_params["id"])
        jobs = service.list_jobs(
            status=None, rule=None, event_id=event.id, limit=service.limits.max_list_limit, offset=0
        )
        return JSONResponse(
            {
                **event_json(event),
                "jobs": [j.id for j in jobs],
                "job_summaries": [
                    {
                        "id": j.id,
                        "rule": j.rule,
                        "action": j.action,
                        "status": str(j.status),
                        "perform_at": iso(j.perform_at),
                    }
                    for j in jobs
                ],
                "matches": describe_matches(service.explain(event)),
                "replays": [_replay_json(r) for r in service.replays(event.id)],
            }
        )

    async def replay_event(request: Request) -> Response:
        body = await _json_body(request, service)
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise UsageError("dry_run must be true or false")
        event, replay, jobs = service.replay(request.path_params["id"], dry_run)
        return JSONResponse(
            {
                "event": event_json(event),
                "replay": _replay_json(replay) if replay else None,
                "dry_run": dry_run,
                "jobs": [_planned_json(j) for j in jobs],
            }
        )

    async def list_jobs(request: Request) -> Response:
        q = request.query_params
        order = q.get("order", "perform_at")
        if order not in ("perform_at", "waiting_first"):
            raise UsageError(f"order must be perform_at or waiting_first, got {order!r}")
        status, rule, event_id = q.get("status"), q.get("rule"), q.get("event")
        jobs = service.list_jobs(
            status=status,
            rule=rule,
            event_id=event_id,
            limit=_int_param(request, "limit", 50),
            offset=_int_param(request, "offset", 0),
            waiting_first=order == "waiting_first",
        )
        total = service.count_jobs(status=status, rule=rule, event_id=event_id)
        return _page({"jobs": [job_json(j) for j in jobs]}, total)

    async def show_job(request: Request) -> Response:
        job = service.get_job(request.path_params["id"])
        return JSONResponse({**job_json(job, service.attempts(job.id)), **service.chain(job.id)})

    async def cancel_jobs(request: Request) -> Response:
        body = await _json_body(request, service)
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise UsageError("request body needs 'ids': a non-empty list of job ids")
        outcomes = service.cancel(ids)
        return JSONResponse(
            {
                "results": [
                    {"id": o.id, "cancelled": o.cancelled, "status": o.status, "error": o.error}
                    for o in outcomes
                ]
            }
        )

    async def cancel_matching(request: Request) -> Response:
        body = await _json_body(request, service)
        rule, status, event_id = body.get("rule"), body.get("status"), body.get("event")
        kill = body.get("kill", False)
        if not isinstance(rule, str) or not rule:
            raise UsageError("request body needs 'rule': a rule name")
        for name, value in (("status", status), ("event", event_id)):
            if value is not None and not isinstance(value, str):
                raise UsageError(f"{name} must be a string")
        if not isinstance(kill, bool):
            raise UsageError("kill must be true or false")
        return JSONResponse(
            service.cancel_matching(rule=rule, status=status, event_id=event_id, kill=kill)
        )

    async def retry_dlq_many(request: Request) -> Response:
        ids, rule = _bulk_target(await _json_body(request, service))
        return JSONResponse(_bulk_json(service.dlq_retry_many(ids, rule)))

    async def delete_dlq_many(request: Request) -> Response:
        ids, rule = _bulk_target(await _json_body(request, service))
        return JSONResponse(_bulk_json(service.dlq_delete_many(ids, rule)))

    async def list_dlq(request: Request) -> Response:
        rule = request.query_params.get("rule")
        jobs = service.list_jobs(
            status="dead",
            rule=rule,
            event_id=None,
            limit=_int_param(request, "limit", 50),
            offset=_int_param(request, "offset", 0),
        )
        total = service.count_jobs(status="dead", rule=rule, event_id=None)
        return _page({"jobs": [job_json(j) for j in jobs]}, total)

    async def retry_dlq(request: Request) -> Response:
        return JSONResponse(job_json(service.dlq_retry(request.path_params["id"])))

    async def delete_dlq(request: Request) -> Response:
        service.dlq_delete(request.path_params["id"])
        return JSONResponse({"id": request.path_params["id"], "deleted": True})

    async def list_rules(request: Request) -> Response:
        return JSONResponse({"rules": [_rule_view(service, r) for r in service.rules.rules]})

    async def show_rule(request: Request) -> Response:
        return JSONResponse(_rule_view(service, service.rule(request.path_params["name"])))

    async def rule_history(request: Request) -> Response:
        name = request.path_params["name"]
        history = service.rule_history(
            name, _int_param(request, "limit", 50), _int_param(request, "offset", 0)
        )
        return _page({"rule": name, "occurrences": history}, service.count_history(name))

    async def rule_next(request: Request) -> Response:
        raw = request.query_params.get("after")
        after = parse_instant(raw, "after") if raw else None
        fires = service.rule_next(
            request.path_params["name"], after, _int_param(request, "count", 5)
        )
        return JSONResponse({"rule": request.path_params["name"], "fires": fires})

    async def disable_rule(request: Request) -> Response:
        body = await _json_body(request, service)
        raw = body.get("for")
        if raw is not None and not isinstance(raw, str):
            raise UsageError("for must be a duration such as 30m")
        duration = parse_duration(raw, "for") if raw is not None else None
        rule = service.disable_rule(request.path_params["name"], duration)
        return JSONResponse(_rule_view(service, rule))

    async def enable_rule(request: Request) -> Response:
        return JSONResponse(_rule_view(service, service.enable_rule(request.path_params["name"])))

    async def set_rule(request: Request) -> Response:
        body = await _json_body(request, service)
        values: dict[str, Any] = {}
        for key, kind in (("priority", int), ("rate_limit", str), ("concurrency", int)):
            value = body.get(key)
            if value is None:
                continue
            if not isinstance(value, kind) or isinstance(value, bool):
                raise UsageError(f"{key} must be {'an integer' if kind is int else 'a string'}")
            values[key] = value
        if not values:
            raise UsageError("give at least one of priority, rate_limit, concurrency")
        rule = service.set_rule(request.path_params["name"], **values)
        return JSONResponse(_rule_view(service, rule))

    async def reset_rule(request: Request) -> Response:
        return JSONResponse(_rule_view(service, service.reset_rule(request.path_params["name"])))

    async def run_rule(request: Request) -> Response:
        body = await _json_body(request, service)
        payload = body.get("payload")
        if payload is not None and not isinstance(payload, dict):
            raise PayloadError(f"payload must be a JSON object, got {type(payload).__name__}")
        job = service.run_rule(request.path_params["name"], payload)
        return JSONResponse(job_json(job), status_code=201)

    async def reload(request: Request) -> Response:
        rules = await service.reload()
        warnings = [str(w) for w in rules.warnings]
        return JSONResponse({"reloaded": True, "rules": len(rules.rules), "warnings": warnings})

    async def status(request: Request) -> Response:
        return JSONResponse(service.status())

    async def health(request: Request) -> Response:
        # Monitors (load balancers, uptime checkers) read the status code; the body is the same.
        body = service.health()
        return JSONResponse(body, status_code=200 if body["status"] == "healthy" else 503)

    async def cleanup(request: Request) -> Response:
        body = await _json_body(request, service)
        raw = body.get("older_than")
        if raw is not None and not isinstance(raw, str):
            raise UsageError("older_than must be a duration such as 30d")
        statuses = body.get("statuses", [])
        if not isinstance(statuses, list) or not all(isinstance(s, str) for s in statuses):
            raise UsageError("statuses must be a list of job statuses")
        flags = {k: body.get(k, False) for k in ("events", "dry_run", "vacuum")}
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise UsageError(f"{name} must be true or false")
        result = await service.cleanup(
            older_than=parse_duration(raw, "older_than") if raw is not None else None,
            statuses=statuses,
            **flags,
        )
        return JSONResponse(result)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def metrics(request: Request) -> Response:
        return Response(service.metrics(), media_type=METRICS_TYPE)

    async def watch(request: Request) -> Response:
        q = request.query_params
        watcher = service.watch(q.get("rule"), q.get("type"))  # UsageError: 400 before streaming
        return EventStream(watcher, service.unwatch)

    # The one table of the API: the routes served and /openapi.json are both built from it.
    endpoints = (
        Endpoint("POST", "/v1/events", emit, "Emit an event; its rules create jobs",
                 body=EMIT_BODY, errors=(400, 409), tags=("events",), ok={
                     201: ("Stored; `jobs` lists the jobs its rules created", ref("EmitResult")),
                     200: ("A duplicate of an event with the same idempotency key and payload;"
                           " no new jobs", ref("EmitResult")),
                 }),
        Endpoint("POST", "/v1/events/batch", emit_batch,
                 "Emit up to 100,000 events in one transaction: all are stored or none",
                 body=BATCH_BODY, errors=(400, 409), tags=("events",), ok={
                     200: ("Stored; one result per event, in order", ref("BatchResults")),
                 }),
        Endpoint("GET", "/v1/events", list_events, "List events, newest first",
                 params=(EVENT_TYPE_Q, SINCE_Q, UNTIL_Q, LIMIT_Q, OFFSET_Q), errors=(400,),
                 tags=("events",),
                 ok={200: ("A page of events", listing("events", ref("Event")))}, paged=True),
        Endpoint("GET", "/v1/events/{id}", show_event, "One event, with the jobs it created",
                 params=(ID_P,), errors=(404,), tags=("events",),
                 ok={200: ("The event", ref("EventWithJobs"))}),
        Endpoint("POST", "/v1/events/{id}/replay", replay_event,
                 "Re-evaluate a stored event against the current rules (dry_run: create nothing)",
                 params=(ID_P,), body=REPLAY_BODY, errors=(400, 404), tags=("events",),
                 ok={200: ("The replay and its jobs", ref("Replayed"))}),
        Endpoint("GET", "/v1/jobs", list_jobs, "List jobs by status, rule and event",
                 params=(STATUS_Q, RULE_Q, EVENT_Q, ORDER_Q, LIMIT_Q, OFFSET_Q), errors=(400,),
                 tags=("jobs",), ok={200: ("A page of jobs", listing("jobs", ref("Job")))},
                 paged=True),
        Endpoint("POST", "/v1/jobs/cancel", cancel_jobs, "Cancel waiting jobs (1000 ids at most)",
                 body=CANCEL_BODY, errors=(400,), tags=("jobs",),
                 ok={200: ("One result per id, in order", ref("CancelResults"))}),
        Endpoint("POST", "/v1/jobs/cancel-matching", cancel_matching,
                 "Cancel every waiting job of a rule (kill: stop its running jobs too)",
                 body=CANCEL_MATCHING_BODY, errors=(400, 409), tags=("jobs",),
                 ok={200: ("What was cancelled", ref("CancelledMatching"))}),
        Endpoint("GET", "/v1/jobs/{id}", show_job, "One job with its attempt history",
                 params=(ID_P,), errors=(404,), tags=("jobs",),
                 ok={200: ("The job", ref("JobWithHistory"))}),
        Endpoint("GET", "/v1/dlq", list_dlq, "The dead letter queue",
                 params=(RULE_Q, LIMIT_Q, OFFSET_Q), errors=(400,), tags=("dlq",),
                 ok={200: ("A page of dead jobs", listing("jobs", ref("Job")))}, paged=True),
        Endpoint("POST", "/v1/dlq/retry", retry_dlq_many,
                 "Send dead jobs back to pending: the ids (1000 at most), or all [of a rule]",
                 body=BULK_DLQ_BODY, errors=(400,), tags=("dlq",),
                 ok={200: ("One result per job, in order", ref("BulkResults"))}),
        Endpoint("POST", "/v1/dlq/delete", delete_dlq_many,
                 "Delete dead jobs for good: the ids (1000 at most), or all [of a rule]",
                 body=BULK_DLQ_BODY, errors=(400,), tags=("dlq",),
                 ok={200: ("One result per job, in order", ref("BulkResults"))}),
        Endpoint("POST", "/v1/dlq/{id}/retry", retry_dlq,
                 "Send a dead job back to pending with a fresh attempt budget",
                 params=(ID_P,), errors=(404, 409), tags=("dlq",),
                 ok={200: ("The job, now pending", ref("Job"))}),
        Endpoint("DELETE", "/v1/dlq/{id}", delete_dlq, "Delete a dead job for good",
                 params=(ID_P,), errors=(404, 409), tags=("dlq",),
                 ok={200: ("Deleted", obj(("id", "deleted"), id=STR, deleted=BOOL))}),
        Endpoint("GET", "/v1/rules", list_rules, "Loaded rules", tags=("rules",),
                 ok={200: ("Every loaded rule", listing("rules", ref("Rule")))}),
        Endpoint("GET", "/v1/rules/{name}", show_rule, "One loaded rule",
                 params=(NAME_P,), errors=(404,), tags=("rules",),
                 ok={200: ("The rule", ref("Rule"))}),
        Endpoint("GET", "/v1/rules/{name}/history", rule_history,
                 "A time-based rule's occurrences (fired, skipped, missed, with reasons)",
                 params=(NAME_P, LIMIT_Q, OFFSET_Q), errors=(400, 404), tags=("rules",), paged=True,
                 ok={200: ("Occurrences, newest first", obj(
                     ("rule", "occurrences"), rule=STR,
                     occurrences={"type": "array", "items": ref("Occurrence")}))}),
        Endpoint("GET", "/v1/rules/{name}/next", rule_next,
                 "The next fire times of a time-based rule",
                 params=(NAME_P, AFTER_Q, COUNT_Q), errors=(400, 404), tags=("rules",),
                 ok={200: ("Fire times, soonest first", obj(
                     ("rule", "fires"), rule=STR,
                     fires={"type": "array", "items": ref("Fire")}))}),
        Endpoint("POST", "/v1/rules/{name}/disable", disable_rule,
                 "Disable a rule now, optionally for a while (kept across restarts and reloads)",
                 params=(NAME_P,), body=DISABLE_BODY, errors=(400, 404), tags=("rules",),
                 ok={200: ("The rule as now in force", ref("Rule"))}),
        Endpoint("POST", "/v1/rules/{name}/enable", enable_rule,
                 "Enable a rule now (ends a runtime disable; overrides a file's enabled: false)",
                 params=(NAME_P,), errors=(404,), tags=("rules",),
                 ok={200: ("The rule as now in force", ref("Rule"))}),
        Endpoint("POST", "/v1/rules/{name}/overrides", set_rule,
                 "Override a rule's priority, rate_limit or concurrency (in force at once)",
                 params=(NAME_P,), body=OVERRIDES_BODY, errors=(400, 404), tags=("rules",),
                 ok={200: ("The rule as now in force", ref("Rule"))}),
        Endpoint("DELETE", "/v1/rules/{name}/overrides", reset_rule,
                 "Drop a rule's runtime overrides (a runtime disable ends): the file's values",
                 params=(NAME_P,), errors=(404,), tags=("rules",),
                 ok={200: ("The rule as now in force", ref("Rule"))}),
        Endpoint("POST", "/v1/rules/{name}/run", run_rule,
                 "Create a job for the rule's action now, recorded as a manual run",
                 params=(NAME_P,), body=RUN_BODY, errors=(400, 404), tags=("rules",),
                 ok={201: ("The job created", ref("Job"))}),
        Endpoint("POST", "/v1/reload", reload,
                 "Reload the rule files (the loaded ones stay when the new are invalid)",
                 errors=(422,), tags=("daemon",), ok={200: ("Reloaded", ref("Reloaded"))}),
        Endpoint("GET", "/v1/status", status, "Daemon status", tags=("daemon",),
                 ok={200: ("Daemon facts", ref("Status"))}),
        Endpoint("GET", "/v1/health", health, "Health per component and job counts",
                 tags=("daemon",), ok={
                     200: ("Healthy", ref("Health")),
                     503: ("Degraded or unhealthy (the same body)", ref("Health")),
                 }),
        Endpoint("POST", "/v1/cleanup", cleanup,
                 "Remove (or count) finished jobs and events older than retention or older_than",
                 body=CLEANUP_BODY, errors=(400,), tags=("daemon",),
                 ok={200: ("What was removed (dry_run: would be)", ref("Cleanup"))}),
        Endpoint("GET", "/v1/watch", watch,
                 "Lifecycle events as they happen (server-sent events, until the client leaves)",
                 params=(WATCH_RULE_Q, WATCH_TYPE_Q), errors=(400,), tags=("daemon",),
                 media=SSE_TYPE, ok={200: ("A stream of lifecycle events", WATCH_STREAM)}),
        Endpoint("GET", "/metrics", metrics, "Prometheus metrics", tags=("daemon",),
                 media="text/plain", ok={200: ("Every metric now", METRICS_TEXT)}),
        Endpoint("GET", "/openapi.json", openapi, "This document", tags=("daemon",),
                 ok={200: ("The OpenAPI 3.1 document", {"type": "object"})}),
    )  # fmt: skip
    document = openapi_document(endpoints, "TimeOS", __version__)
    routes = [*_routes(endpoints), *(extra_routes or [])]

    async def not_found(request: Request, exc: Exception) -> Response:
        err = NotFound(f"no API route {request.method} {request.url.path}")
        return JSONResponse(err.to_wire(), status_code=404)

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        headers = getattr(exc, "headers", None) or {}
        allowed = ", ".join(sorted(m.strip() for m in headers.get("Allow", "").split(",") if m))
        err = MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
        )
        return JSONResponse(err.to_wire(), status_code=405, headers={"Allow": allowed})

    app = Api(
        guarded_emit=_guard(emit),
        routes=routes,
        middleware=[Middleware(SlashesInSegments)],
        exception_handlers={404: not_found, 405: method_not_allowed},
    )
    # `/v1/jobs/` is no route: a 307 to `/v1/jobs` would answer a show with a list (or, to a
    # client that follows nothing, with an empty body). Unknown paths are 404 not_found.
    app.router.redirect_slashes = False
    return app


EMIT_PATH = "/v1/events"


class Api(Starlette):
    """The API's Starlette app, with `POST /v1/events` (the hot path) served straight away.

    An emit skips the middleware stack and the route table (matching, dispatch, the exception
    middleware's wrappers): the same handler, with the same checks, errors and answers, is
    called under the same guard. A path with any `%` escape goes the long way, where
    SlashesInSegments decides what it means.
    """

    def __init__(self, *, guarded_emit: Handler, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.guarded_emit = guarded_emit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == EMIT_PATH
            and b"%" not in (scope.get("raw_path") or b"")
        ):
            scope["app"] = self
            response = await self.guarded_emit(Request(scope, receive, send))
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


# Set on requests whose path held `%2F`: their path parameters arrive still quoted.
QUOTED_PARAMS = "timeos.quoted_params"


class SlashesInSegments:
    """Route `%2F` as part of one path segment, the way the client's segment() sent it.

    ASGI gives the router the decoded path, where `/v1/jobs/a%2Fb` has three segments and no
    route; the caller meant the job `a/b`, and should hear "no job with id 'a/b'". Such a path is
    routed with `/` and `%` inside segments quoted again; dispatch unquotes the parameters.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") or b""
        if scope["type"] == "http" and b"%2f" in raw.lower():
            path = raw.partition(b"?")[0].decode("ascii", "replace")
            segments = (unquote(s).replace("%", "%25").replace("/", "%2F") for s in path.split("/"))
            scope = {**scope, "path": "/".join(segments), QUOTED_PARAMS: True}
        await self.app(scope, receive, send)


def _routes(endpoints: tuple[Endpoint, ...]) -> list[Route]:
    """One Starlette route per path serving each of its methods, so others get 405 + Allow."""
    by_path: dict[str, dict[str, Handler]] = {}
    for endpoint in endpoints:  # dicts keep the table's order: /v1/jobs/cancel before {id}
        by_path.setdefault(endpoint.path, {})[endpoint.method] = _guard(endpoint.handler)
    return [
        Route(path, _dispatch(handlers), methods=list(handlers))
        for path, handlers in by_path.items()
    ]


def _dispatch(handlers: Mapping[str, Handler]) -> Handler:
    async def dispatch(request: Request) -> Response:
        # Starlette answers HEAD on GET routes; the route let only our methods through.
        method = "GET" if request.method == "HEAD" else request.method
        if request.scope.get(QUOTED_PARAMS):
            params = request.scope["path_params"]
            request.scope["path_params"] = {k: unquote(v) for k, v in params.items()}
        return await handlers[method](request)

    return dispatch


ViewHook = Callable[[Rule], Mapping[str, Any]]


def _rule_view(service: Service, rule: Rule) -> dict[str, Any]:
    body = rule_json(rule)
    action = service.rules.actions.get(rule.action)
    if action is not None and (action.rate_limit or action.concurrency):
        body["action_limits"] = limits_json(action.rate_limit, action.concurrency)
    body.update(service.rule_schedule(rule))
    body.update(service.rule_control(rule))
    return body
