"""Rate limits and concurrency (`rate_limit`, `burst`, `concurrency` on rules and actions): the
rule-file readers, the limits in force for a RuleSet, and token-bucket arithmetic.

Pure: every function takes `now`. The store keeps one bucket per limit key (`rule:NAME`,
`action:NAME`) and asks here whether a job may start; decisions.md says why a token bucket.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from timeos.errors import UsageError
from timeos.model import RateLimit, RuleSet
from timeos.rules.action_specs import Scope
from timeos.rules.source import Invalid, Map, Node, Scalar, describe, expect_int

LIMIT_KEYS = ("rate_limit", "burst", "concurrency")
RATE_UNITS = ("second", "minute", "hour", "day")
UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^\s*([0-9]{1,9})\s*/\s*(second|minute|hour|day)s?\s*$", re.ASCII)
MAX_CONCURRENCY = 10_000
MAX_BURST = 1_000_000_000
# A float bucket that refilled to 0.9999999999 tokens has a token: the arithmetic is exact to
# far better than this for any rate we accept, so nothing waits a microsecond for rounding.
EPSILON = 1e-9


def parse_rate_limit(spec: str) -> str:
    """Check a rate limit such as `10/minute` and return it in its canonical form."""
    match = _RATE.match(spec)
    if match is None or int(match.group(1)) < 1:
        raise UsageError(
            f"bad rate limit {spec!r}: use COUNT/UNIT with a positive count and a unit of"
            f" {', '.join(RATE_UNITS)}, e.g. 10/minute"
        )
    return f"{int(match.group(1))}/{match.group(2)}"


def rate_limit(spec: str, burst: int | None = None) -> RateLimit:
    """A RateLimit from `COUNT/UNIT` text; `burst` defaults to one unit's worth (COUNT)."""
    count, unit = parse_rate_limit(spec).split("/")
    return RateLimit(int(count), unit, int(count) if burst is None else burst)


def check_concurrency(concurrency: int) -> int:
    """Refuse a concurrency below 1 or absurdly high."""
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"concurrency must be 1..{MAX_CONCURRENCY}, got {concurrency}")
    return concurrency


# ---- rule files ---------------------------------------------------------------------------------


def read_limits(mapping: Map, scope: Scope) -> tuple[RateLimit | None, int | None]:
    """A rule's or action's `rate_limit:` (with `burst:`) and `concurrency:`, problems located."""
    spec = scope.read(mapping, "rate_limit", _rate_spec)
    burst = scope.read(mapping, "burst", lambda n, k: _bounded(n, k, MAX_BURST))
    concurrency = scope.read(mapping, "concurrency", lambda n, k: _bounded(n, k, MAX_CONCURRENCY))
    if burst is not None and mapping.get("rate_limit") is None:
        scope.add(mapping.key_loc("burst"), "burst applies only with rate_limit")
    limit = rate_limit(spec, burst) if spec is not None else None
    return limit, concurrency


def _rate_spec(node: Node, what: str) -> str:
    if not isinstance(node, Scalar) or node.kind != "str":
        raise Invalid(
            node.loc, f"{what} must be COUNT/UNIT such as 10/minute, got {describe(node)}"
        )
    try:
        return parse_rate_limit(node.text)
    except UsageError as exc:
        raise Invalid(node.loc, f"{what}: {exc.message}") from None


def _bounded(node: Node, what: str, high: int) -> int:
    value = expect_int(node, what)
    if not 1 <= value <= high:
        raise Invalid(node.loc, f"{what} must be 1..{high}, got {value}")
    return value


# ---- the limits in force ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limit:
    """One rule's or action's limits, under its key (`rule:NAME` or `action:NAME`)."""

    key: str
    rate: RateLimit | None
    concurrency: int | None
    busy: int = 0  # slots held by runs the store no longer sees running (a timed-out thread)

    def describe(self) -> str:
        """`rule 'hook' (rate_limit 10/minute, burst 10)`: for a delayed attempt's history."""
        kind, _, name = self.key.partition(":")
        parts = []
        if self.rate is not None:
            parts.append(f"rate_limit {self.rate.spec}, burst {self.rate.burst}")
        if self.concurrency is not None:
            parts.append(f"concurrency {self.concurrency}")
        return f"{kind} {name!r} ({'; '.join(parts)})"


def rule_key(name: str) -> str:
    return f"rule:{name}"


def action_key(name: str) -> str:
    return f"action:{name}"


def limits_in_force(rules: RuleSet) -> dict[str, Limit]:
    """Every limited rule and action of the (effective) rules, by key; empty: none is limited.

    A disabled rule keeps its limit: its waiting jobs still run, and still under the limit.
    """
    found: dict[str, Limit] = {}
    for rule in rules.rules:
        if rule.rate_limit is not None or rule.concurrency is not None:
            key = rule_key(rule.name)
            found[key] = Limit(key, rule.rate_limit, rule.concurrency)
    for action in rules.actions.values():
        if action.rate_limit is not None or action.concurrency is not None:
            key = action_key(action.name)
            found[key] = Limit(key, action.rate_limit, action.concurrency)
    return found


LimitsInForce = Mapping[str, Limit]


def with_busy(limits: LimitsInForce, busy: Mapping[tuple[str, str], int]) -> LimitsInForce:
    """`limits` with the concurrency slots that runs outside the store hold, by (rule, action):
    a python function's thread outlives its timed-out attempt, and still runs."""
    if not busy or not limits:
        return limits
    held: dict[str, int] = {}
    for (rule, action), count in busy.items():
        for key in (rule_key(rule), action_key(action)):
            held[key] = held.get(key, 0) + count
    return {
        key: replace(limit, busy=held[key])
        if key in held and limit.concurrency is not None
        else limit
        for key, limit in limits.items()
    }


# ---- token buckets ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bucket:
    """Tokens in a bucket as of `at`; refilled lazily, from elapsed time, when next read."""

    tokens: float
    at: datetime


def refilled(bucket: Bucket | None, rate: RateLimit, now: datetime) -> Bucket:
    """The bucket at `now`: full when new; else topped up by elapsed time, at most to burst.

    A clock stepped back refills nothing and restarts the count from `now`, so the bucket does
    not stay frozen until the clock catches up with where it was.
    """
    if bucket is None:
        return Bucket(float(rate.burst), now)
    tokens = min(bucket.tokens, float(rate.burst))  # a lowered burst takes effect at once
    elapsed = (now - bucket.at) // timedelta(microseconds=1)
    if elapsed > 0:
        # One integer product then one division: 6 s at 10/minute is exactly one token.
        added = elapsed * rate.count / (UNIT_SECONDS[rate.unit] * 1_000_000)
        tokens = min(float(rate.burst), tokens + added)
    return Bucket(tokens, now)


def has_token(bucket: Bucket) -> bool:
    return bucket.tokens >= 1 - EPSILON


def taken(bucket: Bucket) -> Bucket:
    """The bucket after one job took a token (never below zero)."""
    return Bucket(max(0.0, bucket.tokens - 1), bucket.at)


def next_token_at(bucket: Bucket, rate: RateLimit) -> datetime:
    """When the bucket (as of bucket.at) next holds a whole token: now, if it does."""
    if has_token(bucket):
        return bucket.at
    # Aim half an EPSILON short of a whole token, as has_token counts it: aiming at exactly 1
    # lands a float hair past the microsecond (59/60 of a token at 59 s asked for 60.000001 s
    # at 1/minute), and each late wake pushed every later token a microsecond further.
    need = 1 - EPSILON / 2 - bucket.tokens
    micros = math.ceil(need * UNIT_SECONDS[rate.unit] * 1_000_000 / rate.count)
    return bucket.at + timedelta(microseconds=max(1, micros))
