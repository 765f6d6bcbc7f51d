"""`timeos next`: resolve what to preview, offline (`--cron`, `--rules`) or from the daemon.

Offline previews count from this machine's clock; otherwise the running daemon answers (it knows
each rule's stored anchor and state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from timeos.clock import SystemClock
from timeos.errors import NotFound, UsageError
from timeos.time.preview import cron_fires, rule_fires
from timeos.timefmt import parse_instant

if TYPE_CHECKING:  # the HTTP client only for a rule the daemon knows: `--cron` is offline
    from pathlib import Path

    from timeos.cli.client import Client


def cli_zone(name: str, environ: Mapping[str, str]) -> ZoneInfo:
    """`--tz`: an IANA zone name, or `local` for this system's zone; unknown names get a hint."""
    if name == "local":
        from timeos.clock import system_zone

        zone = system_zone(environ)
        if isinstance(zone, ZoneInfo):
            return zone
        raise UsageError(
            "--tz local: this system's zone has no IANA name; give one, e.g. Europe/Paris"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        from zoneinfo import available_timezones

        from timeos.rules.source import suggest

        hint = suggest(name, sorted(available_timezones() | {"local"}))
        raise UsageError(f"--tz: unknown time zone {name!r}{hint}") from None


def preview(
    *,
    rule: str | None,
    cron: str | None,
    tz: str,
    after: str | None,
    count: int,
    rules_path: Sequence[Path] | None,
    client: Client,
    environ: Mapping[str, str],
) -> tuple[list[dict[str, Any]], datetime]:
    """Resolve what to preview and return (fires, now)."""
    now = SystemClock().now()
    start = parse_instant(after, "--after") if after else now
    if (rule is None) == (cron is None):
        raise UsageError("give either a RULE name or --cron EXPR")
    if cron is not None and rules_path:
        raise UsageError("--rules goes with a RULE name, not with --cron")
    if cron is not None:
        return cron_fires(cron, cli_zone(tz, environ), start, count), now
    assert rule is not None
    if rules_path:
        from timeos.rules.loader import load_rules

        found = load_rules(rules_path, environ).rule(rule)
        if found is None:
            raise NotFound(f"no rule named {rule!r} in {', '.join(map(str, rules_path))}")
        return rule_fires(found, start, start, count), now
    # Without --after the daemon counts from its own clock (the one its schedule runs on).
    from timeos.cli.client import segment

    query = {"count": count, "after": start.isoformat() if after else None}
    answer = client.call("GET", f"/v1/rules/{segment(rule)}/next", query=query)
    return answer["fires"], now
