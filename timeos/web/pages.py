"""The dashboard's pages and buttons: each reads or acts through one or two Service calls.

Read handlers render a template; action handlers (POST, CSRF-checked by the app) call Service
and redirect back (303) to a fixed dashboard path with a notice code, never to a given URL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from timeos.daemon.api import _capped_body, _rule_view, event_json, job_json
from timeos.daemon.flow import describe_matches
from timeos.daemon.service import Service
from timeos.errors import UsageError
from timeos.model import JobStatus
from timeos.timefmt import parse_duration, parse_instant
from timeos.web.activity import Activity
from timeos.web.auth import FORM_LIMIT, parse_form
from timeos.web.charts import bar_chart

PAGE_SIZE = 25
FORM_KEY = "timeos.web.form"
NEXT_FIRES = 10
Render = Callable[[Request, str, dict[str, Any]], Response]
NOTICES = {
    "cancelled": "Job cancelled.",
    "retried": "Sent back to pending.",
    "deleted": "Deleted.",
    "enabled": "Rule enabled.",
    "disabled": "Rule disabled.",
    "ran": "Job created for a manual run.",
    "replayed": "Event replayed.",
}


def _offset(request: Request) -> int:
    raw = request.query_params.get("offset", "0")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise UsageError(f"offset must be a whole number, got {raw!r}")
    return int(raw)


def _instant(request: Request, name: str, now: datetime) -> datetime | None:
    """A time filter: an ISO 8601 instant, or `-DURATION` before `now` (`-1h`, `-2d`)."""
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    if raw.startswith("-"):
        return now - parse_duration(raw[1:], f"{name} (-DURATION before now)")
    return parse_instant(raw, f"{name} (ISO 8601, or -DURATION such as -1h)")


def _opt(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    return value or None


async def read_form(request: Request) -> dict[str, str]:
    """The request's urlencoded form, read once (the CSRF check and the handler share it)."""
    cached = request.scope.get(FORM_KEY)
    if cached is None:
        # Read as it arrives and refused past the limit: the login form takes a body from anyone
        # who can reach the port, so it must never be buffered whole first.
        body = await _capped_body(request, FORM_LIMIT)
        try:
            cached = parse_form(body, request.headers.get("content-type", ""))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        request.scope[FORM_KEY] = cached
    return dict(cached)


def _field(form: dict[str, str], name: str) -> str:
    return form.get(name, "").strip()


def _back(path: str, done: str) -> Response:
    return RedirectResponse(f"{path}?{urlencode({'done': done})}", status_code=303)


def _paging(request: Request, offset: int, total: int, size: int) -> dict[str, Any]:
    """Links to the previous and next page, keeping the other query parameters."""
    params = {k: v for k, v in request.query_params.items() if k not in ("offset", "done")}

    def link(to: int) -> str:
        return f"{request.url.path}?{urlencode({**params, 'offset': str(to)})}"

    return {
        "total": total,
        "first": offset + 1 if total else 0,
        "last": min(offset + size, total),
        "prev": link(max(0, offset - size)) if offset > 0 else None,
        "next": link(offset + size) if offset + size < total else None,
    }


class Pages:
    """The handlers, bound to one daemon's service."""

    def __init__(self, service: Service, activity: Activity, render: Render) -> None:
        self.service = service
        self.activity = activity
        self.render = render
        self.size = min(PAGE_SIZE, service.limits.max_list_limit)

    def page(self, request: Request, name: str, **context: Any) -> Response:
        notice = NOTICES.get(request.query_params.get("done", ""))
        return self.render(request, name, {"notice": notice, **context})

    # ---- overview -----------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        service = self.service
        health = service.health()
        now = service.clock.now()
        series = self.activity.series(now)
        labels = [m.start.strftime("%H:%M UTC") for m in series]
        charts = [
            bar_chart("Throughput", [m.succeeded for m in series], labels, "jobs succeeded"),
            bar_chart("Failures", [m.failed for m in series], labels, "failed attempts"),
            bar_chart(
                "Firing lateness", [m.lateness_ms_max for m in series], labels, "ms late (max)"
            ),
        ]
        counts = {str(s): health["jobs"].get(str(s), 0) for s in JobStatus}
        return self.page(
            request,
            "overview.html",
            health=health,
            counts=counts,
            charts=charts,
            fires=self.next_fires(now),
            now=now.isoformat(),
        )

    def next_fires(self, now: datetime) -> list[dict[str, Any]]:
        """The next NEXT_FIRES fire times across every enabled time-based rule."""
        fires: list[dict[str, Any]] = []
        for rule in self.service.rules.rules:
            if rule.time_based and rule.enabled:
                for fire in self.service.rule_next(rule.name, None, NEXT_FIRES):
                    fires.append({**fire, "rule": rule.name})
        fires.sort(key=lambda f: (f["at"], f["rule"]))
        return fires[:NEXT_FIRES]

    # ---- jobs ---------------------------------------------------------------------------------

    async def jobs(self, request: Request) -> Response:
        status, rule, event = _opt(request, "status"), _opt(request, "rule"), _opt(request, "event")
        now = self.service.clock.now()
        since, until = _instant(request, "since", now), _instant(request, "until", now)
        offset = _offset(request)
        service = self.service
        capped = False
        if since is None and until is None:
            jobs = service.list_jobs(
                status=status, rule=rule, event_id=event, limit=self.size, offset=offset
            )
            total = service.count_jobs(status=status, rule=rule, event_id=event)
        else:
            # The store filters jobs by status, rule and event; the time range (on perform_at)
            # is applied here to the first max_list_limit of those (the page says so).
            limit = service.limits.max_list_limit
            found = service.list_jobs(
                status=status, rule=rule, event_id=event, limit=limit, offset=0
            )
            capped = len(found) == limit
            inside = [
                j
                for j in found
                if (since is None or j.perform_at >= since)
                and (until is None or j.perform_at < until)
            ]
            total, jobs = len(inside), inside[offset : offset + self.size]
        return self.page(
            request,
            "jobs.html",
            jobs=[job_json(j) for j in jobs],
            paging=_paging(request, offset, total, self.size),
            filters={
                "status": status or "",
                "rule": rule or "",
                "event": event or "",
                "since": request.query_params.get("since", ""),
                "until": request.query_params.get("until", ""),
            },
            statuses=[str(s) for s in JobStatus],
            rule_names=[r.name for r in service.rules.rules],
            capped=capped,
            cap=service.limits.max_list_limit,
        )

    async def job(self, request: Request) -> Response:
        job = self.service.get_job(request.path_params["id"])
        # The same body as GET /v1/jobs/{id}: the job, its attempts, its chain's parents/children.
        body = {**job_json(job, self.service.attempts(job.id)), **self.service.chain(job.id)}
        return self.page(
            request,
            "job.html",
            job=body,
            payload=job.payload,
            waiting=str(job.status) in ("pending", "retrying", "blocked"),
        )

    async def cancel_job(self, request: Request) -> Response:
        job_id = request.path_params["id"]
        outcome = self.service.cancel([job_id])[0]
        if not outcome.cancelled:
            raise UsageError(outcome.error or f"job {job_id!r} was not cancelled")
        return _back(f"/ui/jobs/{quote(job_id, safe='')}", "cancelled")

    async def retry_job(self, request: Request) -> Response:
        job_id = request.path_params["id"]
        self.service.dlq_retry(job_id)
        return _back(f"/ui/jobs/{quote(job_id, safe='')}", "retried")

    # ---- dead letters -------------------------------------------------------------------------

    async def dlq(self, request: Request) -> Response:
        rule, offset = _opt(request, "rule"), _offset(request)
        service = self.service
        jobs = service.list_jobs(
            status="dead", rule=rule, event_id=None, limit=self.size, offset=offset
        )
        total = service.count_jobs(status="dead", rule=rule, event_id=None)
        return self.page(
            request,
            "dlq.html",
            jobs=[job_json(j) for j in jobs],
            paging=_paging(request, offset, total, self.size),
            rule=rule or "",
        )

    async def dlq_retry(self, request: Request) -> Response:
        ids, rule = self._dead_target(await read_form(request))
        self.service.dlq_retry_many(ids, rule)
        return _back("/ui/dlq", "retried")

    async def dlq_delete(self, request: Request) -> Response:
        ids, rule = self._dead_target(await read_form(request))
        self.service.dlq_delete_many(ids, rule)
        return _back("/ui/dlq", "deleted")

    @staticmethod
    def _dead_target(form: dict[str, str]) -> tuple[list[str] | None, str | None]:
        """One job (`id`), or all of them (`all=1`, optionally of `rule`)."""
        if _field(form, "all") == "1":
            return None, _field(form, "rule") or None
        job_id = _field(form, "id")
        if not job_id:
            raise UsageError("the form names no dead job (id) and not all")
        return [job_id], None

    # ---- events -------------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        event_type = _opt(request, "type")
        now = self.service.clock.now()
        since, until = _instant(request, "since", now), _instant(request, "until", now)
        offset = _offset(request)
        service = self.service
        events = service.list_events(event_type, self.size, offset, since=since, until=until)
        total = service.count_events(event_type, since=since, until=until)
        return self.page(
            request,
            "events.html",
            events=[event_json(e) for e in events],
            paging=_paging(request, offset, total, self.size),
            filters={
                "type": event_type or "",
                "since": request.query_params.get("since", ""),
                "until": request.query_params.get("until", ""),
            },
        )

    async def event(self, request: Request) -> Response:
        service = self.service
        event = service.get_event(request.path_params["id"])
        jobs = service.list_jobs(
            status=None, rule=None, event_id=event.id, limit=service.limits.max_list_limit, offset=0
        )
        return self.page(
            request,
            "event.html",
            event=event_json(event),
            jobs=[job_json(j) for j in jobs],
            matches=describe_matches(service.explain(event)),
            replays=service.replays(event.id),
            planned=None,
        )

    async def replay(self, request: Request) -> Response:
        form = await read_form(request)
        event_id = request.path_params["id"]
        if _field(form, "dry_run") == "1":
            service = self.service
            event, _, planned = service.replay(event_id, dry_run=True)
            jobs = service.list_jobs(
                status=None, rule=None, event_id=event.id, limit=service.limits.max_list_limit,
                offset=0,
            )  # fmt: skip
            return self.page(
                request,
                "event.html",
                event=event_json(event),
                jobs=[job_json(j) for j in jobs],
                matches=describe_matches(service.explain(event)),
                replays=service.replays(event.id),
                planned=[
                    {"rule": j.rule, "action": j.action, "perform_at": j.perform_at.isoformat()}
                    for j in planned
                ],
            )
        self.service.replay(event_id, dry_run=False)
        return _back(f"/ui/events/{quote(event_id, safe='')}", "replayed")

    # ---- rules --------------------------------------------------------------------------------

    async def rules(self, request: Request) -> Response:
        service = self.service
        views = []
        for rule in service.rules.rules:
            view = _rule_view(service, rule)
            view["fires"] = service.rule_next(rule.name, None, 3) if rule.time_based else []
            views.append(view)
        return self.page(request, "rules.html", rules=views)

    async def rule(self, request: Request) -> Response:
        service = self.service
        rule = service.rule(request.path_params["name"])
        view = _rule_view(service, rule)
        offset = _offset(request)
        history = service.rule_history(rule.name, self.size, offset) if rule.time_based else []
        total = service.count_history(rule.name) if rule.time_based else 0
        return self.page(
            request,
            "rule.html",
            rule=view,
            fires=service.rule_next(rule.name, None, NEXT_FIRES) if rule.time_based else [],
            history=history,
            paging=_paging(request, offset, total, self.size),
            recent=[
                job_json(j)
                for j in service.list_jobs(
                    status=None,
                    rule=rule.name,
                    event_id=None,
                    limit=10,
                    offset=0,
                    waiting_first=True,
                )
            ],  # fmt: skip
            source=json.dumps(view, indent=2, ensure_ascii=False),
        )

    async def enable_rule(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.service.enable_rule(name)
        return _back(f"/ui/rules/{quote(name, safe='')}", "enabled")

    async def disable_rule(self, request: Request) -> Response:
        name = request.path_params["name"]
        raw = _field(await read_form(request), "for")
        self.service.disable_rule(name, parse_duration(raw, "for") if raw else None)
        return _back(f"/ui/rules/{quote(name, safe='')}", "disabled")

    async def run_rule(self, request: Request) -> Response:
        name = request.path_params["name"]
        job = self.service.run_rule(name, None)
        return _back(f"/ui/jobs/{quote(job.id, safe='')}", "ran")
