"""Chains: perform lists (`perform: [a, b]`) and `after: other-rule` between event rules.

Pure: which `after:` references are valid (known, event rules, same event, no cycles), the order
that puts every parent rule before its dependants, and the blocked follow-up jobs of a chain.
The store writes the dependency edges; the scheduler never claims a blocked job.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import timedelta

from timeos.model import EventTrigger, NewJob, Rule, RuleSet, effective_retry
from timeos.rules.source import suggest


def problems(rules: Sequence[Rule], known: Collection[str]) -> list[tuple[str, str]]:
    """Every invalid `after:` as (rule name, message); `known` holds every rule name read,
    including rules refused for other reasons (so they are not also reported as unknown)."""
    found: list[tuple[str, str]] = []
    by_name = {r.name: r for r in rules}
    for rule in rules:
        if rule.after is None:
            continue
        trigger = rule.trigger
        if not isinstance(trigger, EventTrigger):
            found.append(
                (rule.name, "after applies only to on_event rules, not to time-based rules")
            )
            continue
        if trigger.at is not None:
            found.append(
                (rule.name, "after and at cannot be combined: the offset counts from the parent")
            )
        if rule.after == rule.name:
            found.append((rule.name, "after names the rule itself"))
            continue
        parent = by_name.get(rule.after)
        if parent is None:
            if rule.after not in known:
                hint = suggest(rule.after, sorted(known))
                found.append((rule.name, f"after: unknown rule {rule.after!r}{hint}"))
            continue
        if not isinstance(parent.trigger, EventTrigger):
            found.append(
                (rule.name, f"after: rule {rule.after!r} is time-based; after needs an event rule")
            )
        elif parent.trigger.event_type != trigger.event_type:
            found.append(
                (
                    rule.name,
                    f"after: rule {rule.after!r} listens for {parent.trigger.event_type!r},"
                    f" not {trigger.event_type!r}: both must handle the same event",
                )
            )
    found.extend(_cycles(by_name))
    return found


def _cycles(by_name: dict[str, Rule]) -> list[tuple[str, str]]:
    """One problem per cycle of `after:` references, reported at its first rule in file order."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for start in by_name:
        path: list[str] = []
        name: str | None = start
        while name is not None and name in by_name and name not in seen and name not in path:
            path.append(name)
            name = by_name[name].after
        if name is not None and name in path and path[-1] != name:  # self: reported above
            loop = path[path.index(name) :]
            first = min(loop, key=list(by_name).index)
            turn = loop[loop.index(first) :] + loop[: loop.index(first)] + [first]
            found.append((first, f"after: cycle {' -> '.join(turn)}"))
        seen.update(path)
    return found


def ordered(rules: Sequence[Rule]) -> list[Rule]:
    """`rules` with every rule after the rule it waits for (file order otherwise)."""
    if not any(r.after for r in rules):
        return list(rules)
    names = {r.name for r in rules}
    placed: set[str] = set()
    result: list[Rule] = []
    pending = list(rules)
    while pending:
        rest: list[Rule] = []
        for rule in pending:
            if rule.after is None or rule.after in placed or rule.after not in names:
                result.append(rule)
                placed.add(rule.name)
            else:
                rest.append(rule)
        if len(rest) == len(pending):  # a cycle: refused at load, so never reached
            result.extend(rest)
            break
        pending = rest
    return result


def steps(head: NewJob, rule: Rule, rules: RuleSet) -> list[NewJob]:
    """The jobs after `head` in `rule`'s perform list: each blocked on the one before it,
    due as soon as that one succeeded."""
    follow: list[NewJob] = []
    for action in rule.then:
        budget = effective_retry(rule, rules.actions[action]).max_attempts
        follow.append(
            replace(
                head,
                action=action,
                max_attempts=budget,
                after=1,
                wait=timedelta(0),
                occurrence_key=None,
                note=None,
            )
        )
    return follow


def with_steps(jobs: Sequence[NewJob], rule: Rule, rules: RuleSet) -> list[NewJob]:
    """`jobs` (heads of one rule, e.g. a time-based rule's fires) each followed by its steps."""
    if not rule.then:
        return list(jobs)
    result: list[NewJob] = []
    for job in jobs:
        result.append(job)
        result.extend(steps(job, rule, rules))
    return result
