"""Durations and instants: parse(render(x)) == x, and clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timeos.errors import UsageError
from timeos.timefmt import format_duration, from_micros, parse_duration, parse_instant, to_micros


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("250ms", timedelta(milliseconds=250)),
        ("0s", timedelta(0)),
    ],
    ids=["seconds", "minutes", "hours", "days", "weeks", "compound", "millis", "zero"],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "2 days", "-5s", "5", "1m1h", "1h1h", "1.5h", "h"],
    ids=[
        "empty",
        "words",
        "negative",
        "no-unit",
        "wrong-order",
        "repeated",
        "decimal",
        "no-number",
    ],
)
def test_bad_durations_are_rejected(text):
    with pytest.raises(UsageError):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**12))
def test_duration_round_trips(ms):
    delta = timedelta(milliseconds=ms)
    assert parse_duration(format_duration(delta)) == delta


def test_instant_needs_an_offset():
    assert parse_instant("2025-03-09T03:00:00-04:00") == datetime(2025, 3, 9, 7, tzinfo=UTC)
    assert parse_instant("2025-03-09T07:00:00Z") == datetime(2025, 3, 9, 7, tzinfo=UTC)
    with pytest.raises(UsageError, match="no UTC offset"):
        parse_instant("2025-03-09T03:00:00")
    with pytest.raises(UsageError, match="not an ISO 8601"):
        parse_instant("yesterday")


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_micros_round_trip(naive):
    value = naive.replace(tzinfo=UTC)
    assert from_micros(to_micros(value)) == value
