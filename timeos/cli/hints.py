"""Why a list came back empty: a filter that names something unknown, or a status with no jobs.

Printed on stderr by the commands; the exit code stays 0 (an empty answer is still an answer).
"""

from __future__ import annotations

from timeos.cli.client import Client, segment
from timeos.errors import NotFound
from timeos.rules.source import suggest


def unknown_rule(client: Client, name: str) -> str | None:
    """`no rule named 'x' is loaded (did you mean 'y'?)`, or None when the rule is loaded."""
    try:
        client.call("GET", f"/v1/rules/{segment(name)}")
    except NotFound:
        names = [r["name"] for r in client.call("GET", "/v1/rules")["rules"]]
        return f"no rule named {name!r} is loaded{suggest(name, names)}"
    return None


def empty_jobs(
    client: Client, *, status: str | None, rule: str | None, event: str | None, what: str = "jobs"
) -> str:
    """Why a job list is empty, naming the filter that explains it."""
    if rule is not None and (unknown := unknown_rule(client, rule)):
        return f"no {what}: {unknown}"
    if event is not None:
        try:
            client.call("GET", f"/v1/events/{segment(event)}")
        except NotFound:
            return f"no {what}: no event with id {event!r}"
    if status is not None:
        # A degraded daemon answers health with 503 and the same body: its counts still hold.
        counts = client.request("GET", "/v1/health", accept=(503,)).body.get("jobs", {})
        others = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        return f"no {what}: no job is {status}" + (f" (jobs by status: {others})" if others else "")
    filters = [f"rule {rule!r}" if rule else "", f"event {event!r}" if event else ""]
    named = " and ".join(f for f in filters if f)
    return f"no {what}" + (f" for {named}" if named else " yet")
