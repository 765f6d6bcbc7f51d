"""The `http` action: send the payload as JSON to a URL and map the response status to an outcome.

2xx succeeds; 5xx, 408, 429 and network errors are retryable; 3xx and other 4xx are permanent.
"""

from __future__ import annotations

from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx2

from timeos.actions.context import ActionContext, decode, describe, payload_json, timeout_message
from timeos.model import ActionResult, HttpSpec, Outcome

ERROR_SNIPPET = 300  # characters of the response body quoted in the error of a failed request
RETRYABLE_4XX = frozenset({408, 429})  # request timeout, too many requests: "try again later"
MAX_RETRY_AFTER_S = 86400  # a server may ask for a pause, not for a day-long one
BODYLESS_METHODS = frozenset({"GET", "HEAD"})


def new_client() -> httpx2.AsyncClient:
    """Create the shared client: no redirects followed, timeouts set per request."""
    # A redirect could silently move a signed, idempotent POST to another scheme or host.
    return httpx2.AsyncClient(follow_redirects=False, timeout=None)


def request_headers(spec: HttpSpec, ctx: ActionContext, *, with_body: bool) -> httpx2.Headers:
    """Build the request headers: the action's own, then the TimeOS ones (which win on a clash)."""
    headers = httpx2.Headers(list(spec.headers))
    if with_body:
        headers["Content-Type"] = "application/json"
    headers.update(
        {
            "X-TimeOS-Job-Id": ctx.job_id,
            "X-TimeOS-Rule": ctx.rule,
            "X-TimeOS-Action": ctx.action,
            "X-TimeOS-Event-Id": ctx.event_id or "",
            "X-TimeOS-Event-Type": ctx.event_type or "",
            "X-TimeOS-Attempt": str(ctx.attempt),
            "X-TimeOS-Scheduled-For": ctx.scheduled_for.isoformat(),
            # Every attempt of a job carries the same key, so a receiver can drop repeats.
            "Idempotency-Key": ctx.job_id,
        }
    )
    return headers


async def run_http(
    client: httpx2.AsyncClient,
    spec: HttpSpec,
    ctx: ActionContext,
    *,
    output_cap: int,
    timeout: timedelta,
) -> ActionResult:
    """Send one request and classify the response; network failures become results, not raises."""
    method = spec.method.upper()
    with_body = method not in BODYLESS_METHODS
    body = payload_json(ctx.payload) if with_body else None
    headers = request_headers(spec, ctx, with_body=with_body)
    try:
        async with client.stream(
            method,
            spec.url,
            content=body,
            headers=headers,
            follow_redirects=False,
            timeout=timeout.total_seconds(),
        ) as response:
            head = await _read_head(response, output_cap)
    except httpx2.TimeoutException:
        return ActionResult(Outcome.TIMEOUT, timeout_message(timeout))
    except (httpx2.UnsupportedProtocol, httpx2.LocalProtocolError, httpx2.InvalidURL) as exc:
        # The URL or request itself is wrong: sending it again cannot succeed.
        return ActionResult(Outcome.PERMANENT, f"bad request to {spec.url!r}: {describe(exc)}")
    except httpx2.RequestError as exc:
        # Connection refused, DNS failure, reset, malformed response: the server may recover.
        return ActionResult(Outcome.FAILED, describe(exc))
    return classify(response.status_code, response.reason_phrase, response.headers, head)


def classify(status: int, reason: str, headers: httpx2.Headers, head: bytes) -> ActionResult:
    """Map a response status and the first bytes of its body to an ActionResult."""
    if 200 <= status < 300:
        return ActionResult(Outcome.SUCCEEDED, None, decode(head))
    if 300 <= status < 400:
        location = headers.get("Location")
        where = f"redirect to {location!r} not followed" if location else "redirect not followed"
        return ActionResult(Outcome.PERMANENT, f"HTTP {status}: {where}")
    snippet = " ".join(decode(head).split())[:ERROR_SNIPPET] or reason or "no reason given"
    error = f"HTTP {status}: {snippet}"
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        return ActionResult(Outcome.PERMANENT, error)
    return ActionResult(Outcome.FAILED, error, retry_after=retry_after(headers))


def retry_after(headers: httpx2.Headers) -> timedelta | None:
    """The Retry-After header (delay-seconds, or an HTTP-date relative to the Date header)."""
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return timedelta(seconds=min(int(value[:9]), MAX_RETRY_AFTER_S))
    try:
        when = _aware(parsedate_to_datetime(value))
        sent = _aware(parsedate_to_datetime(headers.get("Date", "")))
        seconds = (when - sent).total_seconds()
    except (TypeError, ValueError, OverflowError):
        return None  # a date without the server's Date to compare with: no clock read here
    return timedelta(seconds=min(max(seconds, 0), MAX_RETRY_AFTER_S))


def _aware(value: datetime) -> datetime:
    # RFC 5322 "-0000" parses as naive: it still means UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def _read_head(response: httpx2.Response, cap: int) -> bytes:
    """Read at most `cap` bytes of the body; the rest is discarded when the response closes."""
    head = bytearray()
    if cap <= 0:
        return b""
    async with aclosing(response.aiter_bytes()) as chunks:
        async for chunk in chunks:
            head += chunk[: cap - len(head)]
            if len(head) >= cap:
                break
    return bytes(head)
