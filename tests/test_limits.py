"""Rate limits and concurrency, pure: reading them from rule files, the limits in force, and
token-bucket arithmetic on explicit instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from timeos.errors import RulesError, UsageError
from timeos.model import RateLimit, RuleOverride
from timeos.rules.limits import (
    Bucket,
    has_token,
    limits_in_force,
    next_token_at,
    rate_limit,
    refilled,
    taken,
)
from timeos.rules.loader import load_rules
from timeos.rules.overrides import apply_overrides, describe

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TEN_A_MINUTE = RateLimit(10, "minute", 10)


def _load(tmp_path: Path, text: str):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return load_rules([path], {}, import_python=False)


@pytest.mark.parametrize(
    ("spec", "burst", "expected"),
    [
        ("10/minute", None, RateLimit(10, "minute", 10)),
        ("1/second", 5, RateLimit(1, "second", 5)),
        (" 3 / hours ", None, RateLimit(3, "hour", 3)),
        ("100/day", 1, RateLimit(100, "day", 1)),
    ],
    ids=["minute", "burst", "plural-spaces", "day-burst-1"],
)
def test_rate_limit_parses_count_unit_and_defaults_burst_to_one_unit(spec, burst, expected):
    assert rate_limit(spec, burst) == expected


@pytest.mark.parametrize("spec", ["10", "0/minute", "10/fortnight", "ten/minute", "-1/hour"])
def test_bad_rate_limits_are_refused(spec):
    with pytest.raises(UsageError, match="bad rate limit"):
        rate_limit(spec)


def test_a_new_bucket_is_full_and_empties_one_token_per_job():
    bucket = refilled(None, TEN_A_MINUTE, T0)
    assert bucket.tokens == 10
    for _ in range(10):
        assert has_token(bucket)
        bucket = taken(bucket)
    assert not has_token(bucket)
    assert next_token_at(bucket, TEN_A_MINUTE) == T0 + timedelta(seconds=6)


def test_a_bucket_refills_exactly_one_token_per_interval_and_never_past_burst():
    empty = Bucket(0.0, T0)
    assert not has_token(
        refilled(empty, TEN_A_MINUTE, T0 + timedelta(seconds=5, microseconds=999_999))
    )
    assert refilled(empty, TEN_A_MINUTE, T0 + timedelta(seconds=6)).tokens == 1.0
    assert refilled(empty, TEN_A_MINUTE, T0 + timedelta(minutes=30)).tokens == 10.0


def test_an_uneven_rate_gets_its_token_at_the_computed_instant():
    seven = RateLimit(7, "minute", 1)
    bucket = Bucket(0.0, T0)
    at = next_token_at(bucket, seven)
    assert has_token(refilled(bucket, seven, at))
    assert not has_token(refilled(bucket, seven, at - timedelta(milliseconds=1)))


def test_a_clock_stepped_back_refills_nothing_and_restarts_the_count():
    bucket = Bucket(0.5, T0)
    back = refilled(bucket, TEN_A_MINUTE, T0 - timedelta(hours=1))
    assert back == Bucket(0.5, T0 - timedelta(hours=1))
    # From there, 3 s more give the missing half token (not an hour's wait).
    assert has_token(refilled(back, TEN_A_MINUTE, T0 - timedelta(hours=1) + timedelta(seconds=3)))


def test_a_lowered_burst_caps_the_tokens_at_once():
    assert refilled(Bucket(10.0, T0), RateLimit(1, "minute", 1), T0).tokens == 1.0


def test_rules_and_actions_read_rate_limit_burst_and_concurrency(tmp_path):
    rules = _load(
        tmp_path,
        "actions:\n"
        "  mail:\n    command: [/bin/true]\n    rate_limit: 10/minute\n    concurrency: 2\n"
        "rules:\n"
        "  - name: hook\n    on_event: signup\n    perform: mail\n"
        "    rate_limit: 5/hour\n    burst: 2\n    concurrency: 1\n"
        "  - name: free\n    on_event: signup\n    perform: mail\n",
    )
    hook, free = rules.rules
    assert hook.rate_limit == RateLimit(5, "hour", 2) and hook.concurrency == 1
    assert free.rate_limit is None and free.concurrency is None
    assert rules.actions["mail"].rate_limit == RateLimit(10, "minute", 10)
    limits = limits_in_force(rules)
    assert set(limits) == {"rule:hook", "action:mail"}
    assert limits["action:mail"].concurrency == 2
    assert (
        limits["rule:hook"].describe() == "rule 'hook' (rate_limit 5/hour, burst 2; concurrency 1)"
    )


def test_bad_limits_are_load_errors_with_file_line_col(tmp_path):
    with pytest.raises(RulesError) as caught:
        _load(
            tmp_path,
            "actions:\n  mail:\n    command: [/bin/true]\n    concurrency: 0\n"
            "rules:\n"
            "  - name: a\n    on_event: x\n    perform: mail\n    rate_limit: 10/fortnight\n"
            "  - name: b\n    on_event: x\n    perform: mail\n    burst: 3\n"
            "  - name: c\n    on_event: x\n    perform: mail\n    rate_limit: 10\n",
        )
    text = str(caught.value)
    path = tmp_path / "rules.yaml"
    assert f"{path}:4:18: action 'mail': concurrency must be 1..10000, got 0" in text
    assert f"{path}:9:17: rule 'a': rate_limit: bad rate limit '10/fortnight'" in text
    assert f"{path}:13:5: rule 'b': burst applies only with rate_limit" in text
    assert f"{path}:17:17: rule 'c': rate_limit must be COUNT/UNIT such as 10/minute" in text


def test_an_override_wins_over_the_file_and_says_where_each_value_came_from(tmp_path):
    rules = _load(
        tmp_path,
        "actions:\n  mail:\n    command: [/bin/true]\n"
        "rules:\n  - name: hook\n    on_event: x\n    perform: mail\n"
        "    rate_limit: 5/minute\n    burst: 20\n    concurrency: 3\n",
    )
    override = RuleOverride("hook", rate_limit="1/second", concurrency=1)
    hook = apply_overrides(rules, {"hook": override}, T0).rules[0]
    # The override replaces the whole rate limit: its burst is one unit's worth of the new rate.
    assert hook.rate_limit == RateLimit(1, "second", 1) and hook.concurrency == 1
    shown = describe(rules.rules[0], override, T0)
    assert shown["rate_limit"] == {"value": "1/second", "from": "override", "file": "5/minute"}
    assert shown["burst"] == {"value": 1, "from": "override", "file": 20}
    assert shown["concurrency"] == {"value": 1, "from": "override", "file": 3}
    plain = describe(rules.rules[0], None, T0)
    assert plain["rate_limit"] == {"value": "5/minute", "from": "file", "file": "5/minute"}
    assert plain["burst"]["value"] == 20 and plain["concurrency"]["from"] == "file"
