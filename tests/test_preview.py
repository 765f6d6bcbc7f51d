"""Fire-time previews: pure time.preview, and `timeos next` resolving offline or via the daemon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from timeos.cli.client import Client
from timeos.cli.preview import preview
from timeos.errors import NotFound, ScheduleError, UsageError
from timeos.model import (
    CronTrigger,
    DstPolicy,
    EventTrigger,
    FoldPolicy,
    GapPolicy,
    IntervalTrigger,
    Rule,
)
from timeos.time.preview import cron_fires, fire_json, rule_fires

NY = ZoneInfo("America/New_York")
BEFORE_SPRING = datetime(2026, 3, 7, 12, tzinfo=UTC)  # Sat; US clocks spring forward Sun 8 Mar
BEFORE_FALL = datetime(2026, 10, 31, 12, tzinfo=UTC)  # Sat; US clocks fall back Sun 1 Nov


def _nightly(expression: str, dst: DstPolicy = DstPolicy()) -> Rule:
    return Rule("nightly", CronTrigger(expression), "act", timezone=NY, dst=dst)


def _show(fires: list[dict[str, Any]]) -> list[str]:
    """Each fire as 'Sun 2026-03-08 03:00 EDT [note]', so rows assert weekday and zone too."""
    shown = []
    for fire in fires:
        local = datetime.fromisoformat(fire["at"]).astimezone(ZoneInfo(fire["zone"]))
        text = f"{local:%a %Y-%m-%d %H:%M %Z}"
        shown.append(f"{text} [{fire['note']}]" if fire["note"] else text)
    return shown


# ---- time.preview -----------------------------------------------------------------------------


def test_fire_json_gives_the_instant_in_utc_and_in_the_zone():
    at = datetime(2026, 7, 1, 13, 0, tzinfo=UTC)
    assert fire_json(at, NY, "a note") == {
        "at": "2026-07-01T13:00:00+00:00",
        "at_local": "2026-07-01T09:00:00-04:00",
        "local": "2026-07-01T09:00:00-04:00",
        "zone": "America/New_York",
        "note": "a note",
    }


@pytest.mark.parametrize(
    ("dst", "after", "expected"),
    [
        (
            DstPolicy(),
            BEFORE_SPRING,
            [
                "Sun 2026-03-08 03:00 EDT [moved from 02:30 by the DST gap]",
                "Mon 2026-03-09 02:30 EDT",
                "Tue 2026-03-10 02:30 EDT",
            ],
        ),
        (
            DstPolicy(gap=GapPolicy.SKIP),
            BEFORE_SPRING,
            ["Mon 2026-03-09 02:30 EDT", "Tue 2026-03-10 02:30 EDT", "Wed 2026-03-11 02:30 EDT"],
        ),
    ],
    ids=["gap-run-after-moves-it", "gap-skip-drops-it-and-still-gives-count"],
)
def test_rule_fires_follow_the_rules_gap_policy(dst, after, expected):
    assert _show(rule_fires(_nightly("30 2 * * *", dst), after, after, 3)) == expected


@pytest.mark.parametrize(
    ("fold", "expected"),
    [
        (FoldPolicy.FIRST, ["Sun 2026-11-01 01:30 EDT", "Mon 2026-11-02 01:30 EST"]),
        (FoldPolicy.LAST, ["Sun 2026-11-01 01:30 EST", "Mon 2026-11-02 01:30 EST"]),
        (
            FoldPolicy.BOTH,
            [
                "Sun 2026-11-01 01:30 EDT [first of two 01:30s]",
                "Sun 2026-11-01 01:30 EST [second of two 01:30s]",
            ],
        ),
    ],
    ids=["fold-first", "fold-last", "fold-both-notes-each"],
)
def test_rule_fires_follow_the_rules_fold_policy(fold, expected):
    rule = _nightly("30 1 * * *", DstPolicy(fold=fold))
    assert _show(rule_fires(rule, BEFORE_FALL, BEFORE_FALL, 2)) == expected


def test_rule_fires_are_strictly_after_the_start():
    at = datetime(2026, 3, 9, 6, 30, tzinfo=UTC)  # exactly Mon 02:30 EDT
    (fire,) = rule_fires(_nightly("30 2 * * *"), at, at, 1)
    assert _show([fire]) == ["Tue 2026-03-10 02:30 EDT"]


def test_interval_rule_fires_count_from_the_anchor_not_from_the_start():
    rule = Rule("pulse", IntervalTrigger(timedelta(minutes=45)), "act")
    anchor = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    fires = rule_fires(rule, anchor, anchor + timedelta(hours=1), 2)
    assert [f["at"] for f in fires] == ["2026-03-02T10:30:00+00:00", "2026-03-02T11:15:00+00:00"]
    assert all(f["zone"] == "UTC" and f["note"] is None for f in fires)


def test_rule_fires_refuse_an_event_rule():
    with pytest.raises(UsageError, match="'welcome' is triggered by events"):
        rule_fires(Rule("welcome", EventTrigger("signup"), "act"), BEFORE_FALL, BEFORE_FALL, 1)


@pytest.mark.parametrize("count", [1, 2, 7], ids=str)
def test_cron_fires_returns_exactly_count_fires_in_order(count):
    fires = cron_fires("0 9 * * 1", NY, BEFORE_SPRING, count)
    assert len(fires) == count
    assert all(local.startswith("Mon ") and "09:00 E" in local for local in _show(fires))
    instants = [f["at"] for f in fires]
    assert instants == sorted(instants) and len(set(instants)) == count


def test_cron_fires_with_a_wildcard_hour_skip_the_missing_hour_and_run_both_repeated_ones():
    spring = cron_fires("30 * 8 3 *", NY, datetime(2026, 3, 8, 6, tzinfo=UTC), 3)
    assert _show(spring) == [
        "Sun 2026-03-08 01:30 EST",
        "Sun 2026-03-08 03:30 EDT",  # no 02:30 that day, and nothing moved in its place
        "Sun 2026-03-08 04:30 EDT",
    ]
    fall = cron_fires("30 * 1 11 *", NY, datetime(2026, 11, 1, 4, 45, tzinfo=UTC), 3)
    assert _show(fall) == [
        "Sun 2026-11-01 01:30 EDT [first of two 01:30s]",
        "Sun 2026-11-01 01:30 EST [second of two 01:30s]",
        "Sun 2026-11-01 02:30 EST",
    ]


def test_cron_fires_reject_a_bad_expression():
    with pytest.raises(ScheduleError):
        cron_fires("61 * * * *", NY, BEFORE_SPRING, 1)


# ---- cli.preview ------------------------------------------------------------------------------


class NeverClient(Client):
    """Offline previews must not reach for the daemon."""

    def __init__(self) -> None:
        super().__init__(Path("/nonexistent/timeos.sock"))

    def call(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the daemon was asked: {args} {kwargs}")


class RecordingClient(Client):
    """Answers `timeos next RULE` as the daemon would, and remembers what it was asked."""

    def __init__(self) -> None:
        super().__init__(Path("/nonexistent/timeos.sock"))
        self.calls: list[tuple[Any, ...]] = []

    def call(self, method: str, path: str, body: Any = None, query: Any = None) -> Any:
        self.calls.append((method, path, query))
        return {"fires": [{"at": "2026-03-09T06:30:00+00:00", "zone": "UTC", "note": None}]}


def _preview(**overrides: Any) -> tuple[list[dict[str, Any]], datetime]:
    options: dict[str, Any] = {
        "rule": None,
        "cron": None,
        "tz": "UTC",
        "after": None,
        "count": 3,
        "rules_path": None,
        "client": NeverClient(),
        "environ": {},
    }
    options.update(overrides)
    return preview(**options)


RULES_YAML = """\
actions:
  act: {command: [cat]}
rules:
  - name: nightly
    cron: "30 2 * * *"
    timezone: America/New_York
    dst: {gap: skip}
    perform: act
  - {name: welcome, on_event: signup, perform: act}
"""


def test_preview_of_a_cron_expression_is_offline_in_the_given_zone():
    fires, _ = _preview(cron="30 2 * * *", tz="America/New_York", after="2026-03-07T12:00:00Z")
    assert _show(fires) == [
        "Sun 2026-03-08 03:00 EDT [moved from 02:30 by the DST gap]",
        "Mon 2026-03-09 02:30 EDT",
        "Tue 2026-03-10 02:30 EDT",
    ]


def test_preview_without_after_counts_from_now():
    fires, now = _preview(cron="* * * * *", count=2)
    assert now.tzinfo is not None
    first = datetime.fromisoformat(fires[0]["at"])
    assert now < first <= now + timedelta(minutes=1)


def test_preview_of_a_rule_from_a_rules_file_uses_its_dst_policy(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES_YAML)
    fires, _ = _preview(rule="nightly", rules_path=[path], after="2026-03-07T12:00:00Z", count=2)
    assert _show(fires) == ["Mon 2026-03-09 02:30 EDT", "Tue 2026-03-10 02:30 EDT"]


def test_preview_of_a_rule_missing_from_the_rules_file_is_not_found(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES_YAML)
    with pytest.raises(NotFound, match=r"no rule named 'ghost' in .*rules\.yaml"):
        _preview(rule="ghost", rules_path=[path])
    with pytest.raises(UsageError, match="triggered by events"):
        _preview(rule="welcome", rules_path=[path])


def test_preview_of_a_rule_without_rules_file_asks_the_daemon_with_a_quoted_name():
    client = RecordingClient()
    fires, _ = _preview(rule="a/b", client=client, count=4)
    assert client.calls == [("GET", "/v1/rules/a%2Fb/next", {"count": 4, "after": None})]
    assert fires == [{"at": "2026-03-09T06:30:00+00:00", "zone": "UTC", "note": None}]
    _preview(rule="r", client=client, after="2026-03-07T12:00:00+01:00")
    assert client.calls[-1][2] == {"count": 3, "after": "2026-03-07T11:00:00+00:00"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({}, "give either a RULE name or --cron EXPR"),
        ({"rule": "r", "cron": "* * * * *"}, "give either a RULE name or --cron EXPR"),
        ({"cron": "* * * * *", "rules_path": [Path("r.yaml")]}, "--rules goes with a RULE name"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "--tz: unknown time zone 'Mars/Olympus'"),
        ({"cron": "* * * * *", "tz": "../etc/passwd"}, "--tz: unknown time zone"),
        ({"cron": "* * * * *", "after": "tomorrow"}, "--after: 'tomorrow' is not an ISO 8601"),
        ({"cron": "* * * * *", "after": "2026-03-07T12:00"}, "has no UTC offset"),
    ],
    ids=[
        "neither",
        "both",
        "rules-with-cron",
        "unknown-tz",
        "path-as-tz",
        "after-not-a-time",
        "after-without-offset",
    ],
)
def test_preview_usage_errors(overrides, message):
    with pytest.raises(UsageError) as caught:
        _preview(**overrides)
    assert message in caught.value.message and caught.value.exit_code == 2
