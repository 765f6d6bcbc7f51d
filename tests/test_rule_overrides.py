"""Runtime rule overrides, pure: validation, disable/enable/set/reset, the effective RuleSet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from timeos.errors import UsageError
from timeos.model import (
    Action,
    ActionKind,
    CommandSpec,
    CronTrigger,
    EventTrigger,
    Rule,
    RuleOverride,
    RuleSet,
)
from timeos.rules.overrides import (
    apply_overrides,
    describe,
    disable,
    enable,
    next_change,
    parse_rate_limit,
    reset,
    set_values,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
HOUR = timedelta(hours=1)
ACT = Action("act", ActionKind.COMMAND, CommandSpec(("true",)))
TICK = Rule("tick", CronTrigger("0 * * * *"), "act", priority=1)
HOOK = Rule("hook", EventTrigger("signup"), "act")
RULES = RuleSet((TICK, HOOK), {"act": ACT})


def _rule(rules: RuleSet, name: str) -> Rule:
    found = rules.rule(name)
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("10/minute", "10/minute"),
        ("1/second", "1/second"),
        (" 5 / hours ", "5/hour"),
        ("100/day", "100/day"),
    ],
    ids=["minute", "second", "spaces-and-plural", "day"],
)
def test_rate_limit_spec_is_accepted_in_canonical_form(spec, canonical):
    assert parse_rate_limit(spec) == canonical


@pytest.mark.parametrize(
    "spec",
    ["10/week", "0/minute", "-1/minute", "ten/minute", "10", "10/", "/minute", ""],
    ids=["week", "zero", "negative", "word", "no-unit", "empty-unit", "no-count", "empty"],
)
def test_rate_limit_spec_outside_count_per_unit_is_a_usage_error(spec):
    with pytest.raises(UsageError, match="10/minute"):
        parse_rate_limit(spec)


def test_disabled_rule_is_off_in_the_effective_rules_and_matches_no_events():
    overrides = {"hook": disable(None, "hook", T0, None)}
    effective = apply_overrides(RULES, overrides, T0 + HOUR)
    assert _rule(effective, "hook").enabled is False
    assert effective.for_event("signup") == []
    assert _rule(RULES, "hook").enabled is True  # the files' rules are untouched


def test_disable_for_runs_out_at_its_time_and_next_change_says_when():
    overrides = {"tick": disable(None, "tick", T0, HOUR)}
    assert next_change(overrides, T0) == T0 + HOUR
    before = apply_overrides(RULES, overrides, T0 + HOUR - timedelta(microseconds=1))
    assert _rule(before, "tick").enabled is False
    back = _rule(apply_overrides(RULES, overrides, T0 + HOUR), "tick")
    assert back.enabled is True
    assert (back.disabled_at, back.disabled_until) == (T0, T0 + HOUR)  # the window stays known
    assert next_change(overrides, T0 + HOUR) is None


def test_disabling_again_keeps_when_the_disable_began():
    first = disable(None, "tick", T0, None)
    again = disable(first, "tick", T0 + HOUR, HOUR)
    assert (again.disabled_at, again.disabled_until) == (T0, T0 + 2 * HOUR)


def test_disable_for_a_non_positive_duration_is_a_usage_error():
    with pytest.raises(UsageError, match="positive"):
        disable(None, "tick", T0, timedelta(0))


def test_enable_closes_the_disabled_window_now():
    override = enable(disable(None, "tick", T0, None), TICK, T0 + HOUR)
    assert override.enabled is None
    assert (override.disabled_at, override.disabled_until) == (T0, T0 + HOUR)
    assert _rule(apply_overrides(RULES, {"tick": override}, T0 + HOUR), "tick").enabled is True


def test_enable_overrides_a_rule_its_file_disables():
    off = Rule("off", EventTrigger("signup"), "act", enabled=False)
    override = enable(None, off, T0)
    assert override.enabled is True
    effective = apply_overrides(RuleSet((off,), {"act": ACT}), {"off": override}, T0)
    assert [r.name for r in effective.for_event("signup")] == ["off"]


def test_priority_override_replaces_the_files_and_reset_restores_it():
    override = set_values(None, "tick", T0, priority=7)
    assert _rule(apply_overrides(RULES, {"tick": override}, T0), "tick").priority == 7
    cleared = reset(override, TICK, T0 + HOUR)
    assert _rule(apply_overrides(RULES, {"tick": cleared}, T0 + HOUR), "tick").priority == 1


def test_set_leaves_values_it_is_not_given():
    first = set_values(None, "tick", T0, priority=7, rate_limit="10/minute")
    second = set_values(first, "tick", T0, concurrency=2)
    assert (second.priority, second.rate_limit, second.concurrency) == (7, "10/minute", 2)


def test_reset_ends_a_runtime_disable_too():
    cleared = reset(disable(None, "tick", T0, None), TICK, T0 + HOUR)
    assert _rule(apply_overrides(RULES, {"tick": cleared}, T0 + HOUR), "tick").enabled is True


def test_describe_names_the_source_of_each_value_and_the_files_value():
    override = disable(set_values(None, "tick", T0, priority=5), "tick", T0, HOUR)
    shown = describe(TICK, override, T0)
    assert shown["priority"] == {"value": 5, "from": "override", "file": 1}
    assert shown["enabled"] == {
        "value": False,
        "from": "override",
        "file": True,
        "disabled_until": (T0 + HOUR).isoformat(),
    }
    assert shown["rate_limit"] == {"value": None, "from": "file", "file": None}
    after = describe(TICK, override, T0 + HOUR)["enabled"]
    assert after == {"value": True, "from": "file", "file": True, "disabled_until": None}


def test_describe_shows_rate_limit_burst_and_concurrency_overrides_in_force():
    override = set_values(None, "tick", T0, rate_limit="10/minute", concurrency=3)
    shown = describe(TICK, override, T0)
    for key, value in (("rate_limit", "10/minute"), ("burst", 10), ("concurrency", 3)):
        assert shown[key] == {"value": value, "from": "override", "file": None}
    ruled = apply_overrides(RULES, {"tick": override}, T0).rule("tick")
    assert ruled is not None and ruled.rate_limit is not None
    assert (ruled.rate_limit.spec, ruled.concurrency) == ("10/minute", 3)


def test_no_overrides_give_the_files_rules_unchanged():
    assert apply_overrides(RULES, {}, T0) is RULES
    assert apply_overrides(RULES, {"gone": RuleOverride("gone", priority=3)}, T0) == RULES
