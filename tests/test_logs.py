"""The daemon's log filter: the same line at most a few times per interval, with a count."""

from __future__ import annotations

import logging

from timeos.daemon.logs import RepeatFilter


class Ticks:
    """A hand-wound monotonic clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(msg: str, *args: object, name: str = "asyncio") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_a_flood_of_one_line_is_held_back_and_counted_when_shown_again() -> None:
    ticks = Ticks()
    only = RepeatFilter(interval=10, burst=2, monotonic=ticks)
    shown = [only.filter(_record("socket.accept() out of system resource")) for _ in range(1000)]
    assert shown[:3] == [True, True, False] and sum(shown) == 2
    ticks.now = 10
    again = _record("socket.accept() out of system resource")
    assert only.filter(again)
    assert again.getMessage() == "socket.accept() out of system resource (repeated 998 times)"


def test_different_lines_and_loggers_are_not_held_back() -> None:
    only = RepeatFilter(interval=10, burst=1, monotonic=Ticks())
    assert all(only.filter(_record("job %s failed", n)) for n in range(100))
    assert only.filter(_record("same", name="a")) and only.filter(_record("same", name="b"))


def test_a_line_repeated_after_a_quiet_interval_carries_no_count() -> None:
    ticks = Ticks()
    only = RepeatFilter(interval=10, burst=1, monotonic=ticks)
    assert only.filter(_record("reload rejected"))
    ticks.now = 30
    record = _record("reload rejected")
    assert only.filter(record) and record.getMessage() == "reload rejected"
