"""The overview's last-hour series (from lifecycle events) and its bar charts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from timeos.daemon.telemetry import Lifecycle
from timeos.web.activity import WINDOW_MINUTES, Activity
from timeos.web.charts import HEIGHT, bar_chart

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _event(kind: str, at: datetime, **fields: object) -> Lifecycle:
    return Lifecycle(kind, at, fields)


def test_events_are_counted_in_their_minute_and_old_minutes_fall_out() -> None:
    activity = Activity()
    activity.observe(_event("job.succeeded", T0 + timedelta(seconds=5)))
    activity.observe(_event("job.succeeded", T0 + timedelta(seconds=59)))
    activity.observe(_event("job.failed", T0 + timedelta(minutes=1)))
    activity.observe(_event("job.dead", T0 + timedelta(minutes=1)))  # the same failed attempt
    activity.observe(_event("job.started", T0 + timedelta(minutes=2), lateness_ms=250))
    activity.observe(_event("job.started", T0 + timedelta(minutes=2), lateness_ms=40))
    activity.observe(_event("event.emitted", T0))  # not charted
    series = activity.series(T0 + timedelta(minutes=2, seconds=30))
    assert len(series) == WINDOW_MINUTES and series[-1].start == T0 + timedelta(minutes=2)
    assert [(m.succeeded, m.failed, m.lateness_ms_max) for m in series[-3:]] == [
        (2, 0, 0),
        (0, 1, 0),
        (0, 0, 250),
    ]
    later = activity.series(T0 + timedelta(minutes=60))  # minutes 1 to 60
    assert sum(m.succeeded for m in later) == 0 and sum(m.failed for m in later) == 1


def test_an_event_from_before_the_newest_minute_is_dropped_not_misfiled() -> None:
    activity = Activity()
    activity.observe(_event("job.succeeded", T0 + timedelta(minutes=5)))
    activity.observe(_event("job.succeeded", T0))  # a clock that went back
    series = activity.series(T0 + timedelta(minutes=5))
    assert series[-1].succeeded == 1 and series[-6].succeeded == 0


def test_bars_scale_to_the_peak_and_zero_draws_nothing() -> None:
    chart = bar_chart("Throughput", [0, 5, 10], ["a", "b", "c"], "jobs")
    heights = [b.height for b in chart.bars]
    assert heights == [0.0, HEIGHT / 2, HEIGHT] and chart.peak == 10 and chart.total == 15
    assert chart.bars[2].y == 0 and "15 jobs in the last hour" in chart.summary
    assert all(b.height == 0 for b in bar_chart("x", [0, 0], ["a", "b"], "u").bars)
