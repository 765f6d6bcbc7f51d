"""Event correlation of event rules: `cancel_on:` (a later event cancels a waiting job) and
`debounce:` (a burst of events yields one job), read from YAML and planned per event. Pure.

A match is a dotted path (`payload.order_id`: the new event's value there equals the creating
event's, found by an index of stored keys) or a CEL expression over `payload` (the new event's)
and `origin` (the creating event's), evaluated against each waiting job of the rule.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from timeos.errors import ConditionFailed
from timeos.model import CancelOn, Debounce, Event, NewJob, Rule, RuleSet
from timeos.rules.conditions import ConditionSyntax, compile_condition
from timeos.rules.source import (
    Document,
    Invalid,
    Map,
    Node,
    Scalar,
    Seq,
    check_keys,
    describe,
    expect_duration,
    expect_map,
    expect_str,
)
from timeos.timefmt import format_duration

log = logging.getLogger(__name__)

CANCEL_ON_KEYS = ("event", "match")
DEBOUNCE_KEYS = ("key", "period", "max_wait")
MATCH_VARIABLES = ("payload", "origin")
# `payload.a.b`: the steps are plain names, so the text is never also a CEL expression.
_PATH = re.compile(r"payload((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
# `origin.a.b`, `payload`, `origin`: accepted by CEL, but a value, so no match could ever hold.
_VALUE = re.compile(r"(?:payload|origin)(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# The statuses a correlated job may be in to be cancelled (blocked: waiting on a parent job),
# and to take a debounced event's payload (a job already running keeps its own).
CANCELLABLE = ("pending", "retrying", "blocked")
DEBOUNCEABLE = ("pending", "retrying")


# ---- reading the YAML ---------------------------------------------------------------------------


def read_cancel_on(doc: Document, node: Node) -> list[CancelOn | Invalid]:
    """Read a `cancel_on:` list: each entry a CancelOn, or the Invalid that describes it."""
    if not isinstance(node, Seq):
        example = "a list such as [{event: order_paid, match: payload.order_id}]"
        return [Invalid(node.loc, f"cancel_on must be {example}, got {describe(node)}")]
    if not node.items:
        return [Invalid(node.loc, "cancel_on is empty: list the events that cancel a job")]
    found: list[CancelOn | Invalid] = []
    for n, item in enumerate(node.items):
        what = f"cancel_on[{n}]"
        try:
            entry = expect_map(item, what)
        except Invalid as exc:
            found.append(exc)
            continue
        problems: list[CancelOn | Invalid] = [
            Invalid(p.loc, f"{what}: {p.message}") for p in check_keys(entry, CANCEL_ON_KEYS)
        ]
        found.extend(problems)
        try:
            found.append(_cancel_entry(doc, entry, what))
        except Invalid as exc:
            found.append(exc)
    return found


def _cancel_entry(doc: Document, entry: Map, what: str) -> CancelOn:
    for key in CANCEL_ON_KEYS:
        if entry.get(key) is None:
            raise Invalid(entry.loc, f"{what}: missing `{key}:`")
    event_node = entry.get("event")
    match_node = entry.get("match")
    assert event_node is not None and match_node is not None
    event = expect_str(event_node, f"{what}.event")
    if not _EVENT_TYPE.fullmatch(event):
        raise Invalid(
            event_node.loc,
            f"{what}.event {event!r} is not an event type: 1..200 of letters, digits and _ . : -",
        )
    source = expect_str(match_node, f"{what}.match").strip()
    path = _path(source)
    if path is not None:
        return CancelOn(event, source, path=path)
    if _VALUE.fullmatch(source):  # a CEL value, never true or false: it would never cancel
        raise Invalid(
            match_node.loc,
            f"{what}.match {source!r} is a value, not a match: write a path into the new"
            " event (payload.order_id, compared with the same path in the creating event) or"
            " a comparison (payload.refund_of == origin.order_id)",
        )
    try:
        expression = compile_condition(source, MATCH_VARIABLES)
    except ConditionSyntax as exc:
        assert isinstance(match_node, Scalar)  # expect_str accepted it
        where = doc.locate(match_node, exc.line, exc.column)
        raise Invalid(
            where,
            f"{what}.match {source!r} is neither a path (payload.order_id) nor an expression"
            f" over payload and origin: {exc.message}",
        ) from None
    return CancelOn(event, source, expression=expression)


def read_debounce(node: Node, what: str) -> Debounce:
    """Read `debounce: {key: payload.x, period: 10m, max_wait: 1h}`; raise Invalid."""
    mapping = expect_map(node, what)
    for problem in check_keys(mapping, DEBOUNCE_KEYS):
        raise Invalid(problem.loc, f"{what}: {problem.message}")
    for key in ("key", "period"):
        if mapping.get(key) is None:
            raise Invalid(mapping.loc, f"{what}: missing `{key}:`")
    key_node, period_node = mapping.get("key"), mapping.get("period")
    assert key_node is not None and period_node is not None
    key = expect_str(key_node, f"{what}.key").strip()
    path = _path(key)
    if path is None:
        raise Invalid(
            key_node.loc, f"{what}.key {key!r} must be a path into the payload: payload.user_id"
        )
    period = expect_duration(period_node, f"{what}.period", positive=True)
    max_node = mapping.get("max_wait")
    max_wait = None
    if max_node is not None:
        max_wait = expect_duration(max_node, f"{what}.max_wait", positive=True)
        if max_wait < period:
            raise Invalid(
                max_node.loc,
                f"{what}.max_wait ({format_duration(max_wait)}) must be at least"
                f" {what}.period ({format_duration(period)})",
            )
    return Debounce(key, path, period, max_wait)


def _path(text: str) -> tuple[str, ...] | None:
    found = _PATH.fullmatch(text)
    return tuple(found.group(1)[1:].split(".")) if found else None


# ---- planning one event ------------------------------------------------------------------------


def key_name(path: Sequence[str]) -> str:
    """The name a path's value is stored under in the key index: `payload.a.b`."""
    return "payload." + ".".join(path)


def value_at(payload: Mapping[str, Any], path: Sequence[str]) -> str | None:
    """The canonical JSON of the value at `path`, or None where the payload has no such value."""
    value: Any = payload
    for step in path:
        if not isinstance(value, Mapping) or step not in value:
            return None
        value = value[step]
    if value is None:  # a null never correlates: every payload without the field would match
        return None
    return _CANONICAL.encode(_numbers(value))


def _numbers(value: Any) -> Any:
    """`value` with every integral float as an int: JSON has one number type, so `1.0` (as
    Python writes it) and `1` (as JavaScript does) are one key, as CEL's `==` has them."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def rule_paths(rule: Rule) -> list[tuple[str, ...]]:
    """The paths whose values a job of `rule` is indexed by (cancel_on paths, debounce key)."""
    paths = [c.path for c in rule.cancel_on if c.path is not None]
    if rule.debounce is not None:
        paths.append(rule.debounce.path)
    return list(dict.fromkeys(paths))


def job_keys(rule: Rule, payload: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """(key, canonical value) rows to store for a new job of `rule` created from `payload`."""
    rows = []
    for path in rule_paths(rule):
        value = value_at(payload, path)
        if value is not None:
            rows.append((key_name(path), value))
    return tuple(rows)


def index_rows(
    ids: Sequence[str | None], jobs: Sequence[NewJob], rules: RuleSet
) -> list[tuple[str, str, str, str]]:
    """(job id, rule, key, value) rows for jobs created outside an emit (replay, rules run)."""
    by_name = {r.name: r for r in rules.rules if r.cancel_on or r.debounce}
    rows = []
    for job_id, job in zip(ids, jobs, strict=True):
        rule = by_name.get(job.rule)
        if rule is not None and job_id is not None:
            rows += [(job_id, job.rule, k, v) for k, v in job_keys(rule, job.payload)]
    return rows


@dataclass(frozen=True, slots=True)
class KeyLookup:
    """Cancel the waiting jobs of `rule` whose stored `key` has `value` (an index lookup)."""

    rule: str
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Scan:
    """Cancel the waiting jobs of `rule` for whose payload (the origin) `matches` holds."""

    rule: str
    matches: Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class DebounceStep:
    """A new job of a debounced rule: the waiting job of its rule with the same `key` value takes
    its payload (and perform_at, capped by that job's deadline); without one, it is inserted."""

    key: str
    value: str
    deadline: datetime | None  # for an inserted job: first event + max_wait


@dataclass(frozen=True, slots=True)
class Correlation:
    """What one event does beyond creating jobs; `keys`/`debounce` run parallel to `jobs`."""

    event_id: str
    event_type: str
    jobs: tuple[NewJob, ...]
    lookups: tuple[KeyLookup, ...] = ()
    scans: tuple[Scan, ...] = ()
    keys: tuple[tuple[tuple[str, str], ...], ...] = ()
    debounce: tuple[DebounceStep | None, ...] = ()

    @property
    def active(self) -> bool:
        """Whether anything beyond plain job inserts is to be done."""
        return bool(self.lookups or self.scans or any(self.keys) or any(self.debounce))


def correlates(rules: RuleSet) -> bool:
    """Whether any rule has cancel_on or debounce (else emits take the plain path)."""
    return any(r.cancel_on or r.debounce for r in rules.rules)


def correlate(event: Event, jobs: Sequence[NewJob], rules: RuleSet) -> Correlation:
    """Plan `event`'s cancellations, and the keys and debounce of the `jobs` it creates."""
    lookups: list[KeyLookup] = []
    scans: list[Scan] = []
    # Every rule, disabled ones too: their waiting jobs still wait and can still be cancelled.
    for rule in rules.rules:
        for cancel in rule.cancel_on:
            if cancel.event != event.type:
                continue
            if cancel.path is not None:
                value = value_at(event.payload, cancel.path)
                if value is not None:
                    lookups.append(KeyLookup(rule.name, key_name(cancel.path), value))
            elif cancel.expression is not None:
                scans.append(Scan(rule.name, _matcher(cancel, event)))
    by_name = {r.name: r for r in rules.rules}
    keys: list[tuple[tuple[str, str], ...]] = []
    steps: list[DebounceStep | None] = []
    planned: list[NewJob] = []
    for job in jobs:
        owner = by_name.get(job.rule)
        keys.append(job_keys(owner, job.payload) if owner is not None else ())
        step = None
        # Debounce applies to a chain's head; the steps after it go with it (sqlite/correlation).
        if owner is not None and owner.debounce is not None and not job.after:
            debounce = owner.debounce
            value = value_at(job.payload, debounce.path)
            if value is not None:
                wait = debounce.max_wait
                deadline = job.perform_at + wait if wait is not None else None
                step = DebounceStep(key_name(debounce.path), value, deadline)
                job = replace(job, perform_at=job.perform_at + debounce.period)
        steps.append(step)
        planned.append(job)
    return Correlation(
        event.id, event.type, tuple(planned), tuple(lookups), tuple(scans), tuple(keys),
        tuple(steps),
    )  # fmt: skip


def _matcher(cancel: CancelOn, event: Event) -> Callable[[Mapping[str, Any]], bool]:
    expression = cancel.expression
    assert expression is not None
    payload = event.payload
    logged = False

    def matches(origin: Mapping[str, Any]) -> bool:
        nonlocal logged
        try:
            return expression.evaluate(payload, origin)
        except ConditionFailed as exc:
            # One odd payload must only leave that job alone, never fail the emit. Logged once
            # per event: an event without the field fails on every waiting job of the rule.
            if not logged:
                logged = True
                log.warning(
                    "event %s: cancel_on %r: %s (treated as false; later failures of this"
                    " event not logged)",
                    event.id,
                    cancel.match,
                    exc,
                )
            return False

    return matches
