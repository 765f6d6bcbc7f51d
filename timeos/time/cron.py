"""Next fire times for cron / every / weekday rules and the DST policy on top of croniter.

Pure: no I/O, never reads the clock. croniter only enumerates naive local wall times; mapping them
onto instants (DST gaps, folds, clock corrections) happens here and nowhere else. See docs/time.md.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from timeos.errors import ScheduleError
from timeos.model import DstPolicy, FoldPolicy, GapPolicy

# Vixie cron / cronie: a forward jump of up to 3h is DST (fixed-time jobs in it run right after the
# jump); anything bigger is a clock correction, and times it skips simply do not happen.
MAX_DST_JUMP = timedelta(hours=3)

FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_DAYS = {
    d: i for i, d in enumerate("sunday monday tuesday wednesday thursday friday saturday".split())
}
_DAY_ABBREVIATIONS = {d[:3]: n for d, n in _DAYS.items()}
_DAY_NAMES = _DAYS | _DAY_ABBREVIATIONS
_DAY_GROUPS = {"weekday": (1, 2, 3, 4, 5), "weekend": (0, 6)}

_EQUAL_RANGE = re.compile(r"^([0-9a-z]+)-([0-9a-z]+)(?:/\d+)?$")
_RANGE = re.compile(r"^([0-9a-z]+)-([0-9a-z]+)(?:/(\d+))?$")
_STEP = re.compile(r"/0*$")
# The values each field allows (day-of-week 7 is Sunday again, as in cron).
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_HASHED = re.compile(r"^[hr](?:\(\d+-\d+\))?(?:/\d+)?$")
_LAST_SUFFIX = re.compile(r"^\d+l$")
# Anchor for the compile-time look-ahead: fixed, so compiling never depends on the clock.
_REFERENCE = datetime(2000, 1, 1)  # noqa: DTZ001 - a naive wall time on purpose
# One call scans at most a fold's worth of walls plus a few; this only stops a runaway loop.
_MAX_WALLS = 10_000


@dataclass(frozen=True, slots=True)
class Fire:
    """One fire time: the UTC instant, its local wall time, and a DST note when moved/doubled."""

    at: datetime  # aware, UTC
    local: datetime  # aware, in the schedule's zone (fold set for the second copy of an hour)
    note: str | None = None  # e.g. "moved from 02:30 by the DST gap", "first of two 01:30s"


class CronSchedule:
    """A validated cron expression evaluated in one IANA zone with a DST policy."""

    __slots__ = ("_sides", "dst", "expression", "fields", "wildcard", "zone")

    def __init__(self, expression: str, zone: ZoneInfo, dst: DstPolicy = DstPolicy()) -> None:
        self.expression = expression
        self.zone = zone
        self.dst = dst
        raw = _split_fields(expression)
        self.fields = tuple(f.lower() for f in raw)
        # Vixie cron's rule: a job is "wildcard" when its minute or hour field starts with '*'.
        self.wildcard = self.fields[0].startswith("*") or self.fields[1].startswith("*")
        self._sides = _compile_sides(expression, raw)

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {_zone_name(self.zone)!r}, {self.dst!r})"

    def fingerprint(self) -> str:
        """Return a stable string of the normalised expression, the zone and the DST policy."""
        fields = " ".join(self.fields)
        return f"{fields}|{_zone_name(self.zone)}|gap={self.dst.gap}|fold={self.dst.fold}"

    def next_fire(self, after: datetime) -> Fire:
        """Return the first fire strictly after `after` (aware)."""
        walls = _CronWalls(self._sides)
        return _first_fire(after, self.zone, self.dst, self.wildcard, walls, self.expression)


def compile_cron(expression: str, zone: ZoneInfo, dst: DstPolicy = DstPolicy()) -> CronSchedule:
    """Validate and compile; raise ScheduleError naming the bad field."""
    return CronSchedule(expression, zone, dst)


def weekday_cron(days: Sequence[str], at: time) -> str:
    """`every: monday` / [monday, friday] / weekday / weekend + `at` -> the fixed-time cron."""
    names = [days] if isinstance(days, str) else list(days)
    if not names:
        raise ScheduleError("every: needs at least one day")
    numbers: set[int] = set()
    for name in names:
        key = name.strip().lower() if isinstance(name, str) else ""
        if key in _DAY_GROUPS:
            numbers.update(_DAY_GROUPS[key])
        elif key in _DAY_NAMES:
            numbers.add(_DAY_NAMES[key])
        else:
            raise ScheduleError(
                f"every: unknown day {name!r} (use monday..sunday, mon..sun, weekday or weekend)"
            )
    _check_wall_time(at)
    if at.second or at.microsecond:
        raise ScheduleError(f"at: {at.isoformat()} has seconds; cron runs on whole minutes")
    if numbers == set(range(7)):
        dow = "*"
    elif numbers == set(_DAY_GROUPS["weekday"]):
        dow = "1-5"
    else:
        dow = ",".join(str(n) for n in sorted(numbers))
    return f"{at.minute} {at.hour} * * {dow}"


def next_interval(anchor: datetime, every: timedelta, after: datetime) -> datetime:
    """First `anchor + k*every` strictly after `after` (elapsed time, k >= 0)."""
    if every <= timedelta(0):
        raise ScheduleError(f"every: interval must be positive, got {every}")
    # In UTC: Python subtracts two datetimes sharing a tzinfo as wall times, not elapsed time.
    start, now = _utc(anchor, "anchor"), _utc(after, "after")
    if now < start:
        return start
    return start + ((now - start) // every + 1) * every


def next_local_time(
    after: datetime, at: time, zone: ZoneInfo, dst: DstPolicy = DstPolicy()
) -> Fire:
    """First wall-clock `at` in `zone` at or after `after` (event rules' `at:`), DST applied."""
    _check_wall_time(at)
    # Instants have microsecond resolution, so "strictly after after-1us" is "at or after after".
    since = _utc(after, "after") - timedelta(microseconds=1)
    return _first_fire(since, zone, dst, False, _DailyWalls(at), f"at {at.isoformat()}")


def upcoming(schedule: CronSchedule, after: datetime, count: int) -> list[Fire]:
    """The next `count` fires strictly after `after`."""
    fires: list[Fire] = []
    for _ in range(count):
        fires.append(schedule.next_fire(fires[-1].at if fires else after))
    return fires


# ---- parsing: just enough text handling to feed croniter Vixie semantics -----------------------


def _split_fields(expression: str) -> tuple[str, ...]:
    """Expand a macro and check there are exactly 5 fields."""
    text = expression.strip()
    if not text:
        raise ScheduleError("cron expression is empty")
    if text.startswith("@"):
        if text.lower() == "@reboot":
            raise ScheduleError(f"cron {expression!r}: @reboot is not a time schedule")
        if text.lower() not in MACROS:
            raise ScheduleError(f"cron {expression!r}: unknown macro (use {', '.join(MACROS)})")
        text = MACROS[text.lower()]
    # croniter splits on ASCII whitespace only, so count fields exactly as it will.
    fields = re.findall(r"\S+", text, re.ASCII)
    if len(fields) != 5:
        raise ScheduleError(
            f"cron {expression!r} has {len(fields)} fields; expected 5: "
            "minute hour day-of-month month day-of-week (no seconds or years)"
        )
    return tuple(fields)


def _compile_sides(expression: str, fields: tuple[str, ...]) -> tuple[Any, ...]:
    """Build the croniter(s) whose merged output is the expression's wall times."""
    # Imported here, not at the top: croniter and dateutil (~100 modules, ~1 MB) are loaded
    # only by rules that have a cron expression, and never by `timeos next` without one.
    from croniter import CroniterBadDateError, croniter

    minute, hour, dom, month, dow = (_check_field(expression, i, f) for i, f in enumerate(fields))
    # Vixie: day-of-month and day-of-week are ORed unless either starts with '*' ('?' is
    # croniter's spelling of '*'). croniter's own day_or looks at the expanded sets instead (it ORs
    # '*/2' with 'mon'), so every side runs with day_or=False and we do the OR by merging sides.
    if any(f.startswith("*") or f == "?" for f in (dom, dow)):
        texts = [f"{minute} {hour} {dom} {month} {dow}"]
    else:
        texts = [f"{minute} {hour} {dom} {month} *", f"{minute} {hour} * {month} {dow}"]
    sides = []
    for text in texts:
        try:
            side = croniter(text, _REFERENCE, ret_type=datetime, day_or=False)
        except (ValueError, TypeError) as exc:  # pragma: no cover - each field passed alone
            raise ScheduleError(f"cron {expression!r} is invalid: {exc}") from None
        # A side that matches nothing in croniter's 50-year window never will (the calendar
        # repeats); drop it so next_fire does not rescan 50 years on every call.
        try:
            side.get_next()
        except CroniterBadDateError:
            continue
        sides.append(side)
    if not sides:
        raise ScheduleError(f"cron {expression!r} never fires: no matching date in 50 years")
    return tuple(sides)


def _check_field(expression: str, index: int, shown: str) -> str:
    """Validate one field alone so the error can name it; return it as croniter should see it."""
    from croniter import croniter

    name, field = FIELD_NAMES[index], shown.lower()
    for item in field.split(","):
        if _HASHED.match(item):
            raise ScheduleError(
                f"cron {expression!r}: {name} field {shown!r}: hashed 'H' and random 'R' values "
                "are not supported"
            )
    _check_cron_rules(expression, index, shown, field)
    # `nL` (Quartz's "last <weekday n> of the month") is croniter's `Ln`: accept both spellings.
    if index == 4:
        field = ",".join(
            f"L{item[:-1]}" if _LAST_SUFFIX.match(item) else item for item in field.split(",")
        )
    field = ",".join(_collapse_equal_range(index, item) for item in field.split(","))
    probe = ["0", "0", "*", "*", "*"]
    probe[index] = field
    try:
        croniter.expand(" ".join(probe))
    except (ValueError, TypeError) as exc:
        reason = str(exc).replace(f"[{' '.join(probe)}]", "").replace(" ".join(probe), "")
        reason = re.sub(r" in field \d", "", reason).split("  Cron:")[0].strip(" .,")
        reason = re.sub(r"^is (not acceptable[.,]?\s*)?", "", reason) or "not recognised"
        raise ScheduleError(
            f"cron {expression!r}: {name} field {shown!r} is invalid ({reason})"
        ) from None
    return field


def _check_cron_rules(expression: str, index: int, shown: str, field: str) -> None:
    """Reject what cron itself rejects but croniter accepts (or reads differently), in our words."""
    name = FIELD_NAMES[index]

    def bad(why: str) -> ScheduleError:
        return ScheduleError(f"cron {expression!r}: {name} field {shown!r} is invalid ({why})")

    items = field.split(",")
    if len(items) > 1 and any("#" in i or "l" in i for i in items):
        for item in items:
            if item.startswith("*") or item == "?":
                # croniter drops the '*' here (`*,L5` fires on the last Friday only).
                raise bad(f"'{item}' cannot be listed with '#' or 'L' items")
    names = _MONTHS if index == 3 else _DAY_ABBREVIATIONS if index == 4 else {}
    low_bound, high_bound = _BOUNDS[index]
    for item in items:
        if _STEP.search(item):
            raise bad(f"'{item}' has step 0; a step must be 1 or more")
        match = _RANGE.match(item)
        if match is None:
            continue
        low, high = (int(t) if t.isdigit() else names.get(t) for t in match.groups()[:2])
        if low is None or high is None:
            continue  # not a name we know: croniter's own check reports it below
        for end in (low, high):
            if not low_bound <= end <= high_bound:
                raise bad(f"range '{item}' ends at {end}, outside {low_bound}-{high_bound}")
        if index == 4 and {low, high} == {0, 7}:
            # 0 and 7 are both Sunday: cronie reads 7-0 as Sunday alone, croniter as every day.
            if low > high:
                raise bad(f"range '{item}': 7 and 0 are both Sunday; write 0 or 7 alone")
            continue
        if low > high:
            first, last = match.group(1), match.group(2)
            if match.group(3):
                hint = "two ranges, each with the step"
            elif index == 4 and high == 0:
                hint = f"'{first}-7' (7 is Sunday too)"
            else:
                named = first in names or last in names
                top = {3: "dec", 4: "sat"}[index] if named else str(6 if index == 4 else high_bound)
                bottom = {3: "jan", 4: "sun"}[index] if named else str(low_bound)
                tail = last if bottom == last else f"{bottom}-{last}"
                hint = f"'{first}-{top},{tail}'"
            raise bad(f"range '{item}' runs backwards and cron does not wrap around; use {hint}")


def _collapse_equal_range(index: int, item: str) -> str:
    """Turn 'a-a' / 'a-a/n' into 'a': croniter reads an equal range as the whole cycle."""
    match = _EQUAL_RANGE.match(item)
    if match is None:
        return item
    names = _MONTHS if index == 3 else _DAY_ABBREVIATIONS if index == 4 else {}
    low, high = (int(t) if t.isdigit() else names.get(t) for t in match.groups())
    return match[1] if low is not None and low == high else item


# ---- wall times -> instants ----------------------------------------------------------------------


class _Walls(Protocol):
    """Candidate naive local wall times, ascending."""

    def restart(self, wall: datetime) -> None:
        """Continue from the first candidate at or after `wall`."""

    def __next__(self) -> datetime:
        """Return the next candidate wall time."""


class _CronWalls:
    """Merge the croniter sides (two for an OR of the day fields) into one ascending stream."""

    def __init__(self, templates: Sequence[Any]) -> None:
        # Copies, so a shared CronSchedule is safe to use from several threads.
        self._sides = [copy.copy(t) for t in templates]
        self._heads: list[datetime | None] = [None] * len(self._sides)
        self._stale = [False] * len(self._sides)  # head consumed; fetched only when needed

    def restart(self, wall: datetime) -> None:
        # croniter yields minutes strictly after its start; aim it at the first minute >= wall.
        start = wall.replace(second=0, microsecond=0)
        if start == wall:
            start -= timedelta(seconds=1)
        self._heads = [self._advance(side, start) for side in self._sides]
        self._stale = [False] * len(self._sides)

    def __next__(self) -> datetime:
        for i, stale in enumerate(self._stale):
            if stale:
                self._heads[i], self._stale[i] = self._advance(self._sides[i], None), False
        live = [h for h in self._heads if h is not None]
        if not live:
            raise ScheduleError("cron expression has no further fire times")
        wall = min(live)
        self._stale = [head == wall for head in self._heads]
        return wall

    @staticmethod
    def _advance(side: Any, start: datetime | None) -> datetime | None:
        from croniter import CroniterBadDateError

        try:
            wall: datetime = side.get_next(datetime, start)
        except CroniterBadDateError:
            return None
        return wall


class _DailyWalls:
    """The same wall-clock time every day."""

    def __init__(self, at: time) -> None:
        self._at = at.replace(tzinfo=None)
        self._day = date.min

    def restart(self, wall: datetime) -> None:
        self._day = wall.date()
        if datetime.combine(self._day, self._at) < wall:
            self._day += timedelta(days=1)

    def __next__(self) -> datetime:
        wall = datetime.combine(self._day, self._at)
        self._day += timedelta(days=1)
        return wall


@dataclass(frozen=True, slots=True)
class _Placed:
    """Where one naive wall time falls in a zone."""

    early: datetime  # UTC: the instant; a fold's first copy; a gap's transition instant
    late: datetime  # UTC: the instant; a fold's second copy; a gap's transition instant
    jump: timedelta = timedelta(0)  # > 0 when the wall time is in a gap


def _place(wall: datetime, zone: ZoneInfo) -> _Placed:
    """Classify `wall` as a plain time, the repeated span of a fold, or a gap."""
    first, second = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    u0, u1 = first.astimezone(UTC), second.astimezone(UTC)
    if u0 <= u1:  # equal: plain; fold=0 earlier: a repeated wall time
        return _Placed(u0, u1)
    # In a gap zoneinfo reads fold=0 with the old offset, so u0 lands after the jump, u1 before it.
    moment = _transition(u1, u0, zone)
    return _Placed(moment, moment, u0 - u1)


def _transition(lo: datetime, hi: datetime, zone: ZoneInfo) -> datetime:
    """The instant in (lo, hi] at which `zone` changes its UTC offset (there must be one)."""
    before = lo.astimezone(zone).utcoffset()
    low, high = math.floor(lo.timestamp()), math.ceil(hi.timestamp())
    while high - low > 1:  # tzdata transitions fall on whole seconds
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == before:
            low = mid
        else:
            high = mid
    return datetime.fromtimestamp(high, UTC)


def _fires(
    wall: datetime, placed: _Placed, zone: ZoneInfo, dst: DstPolicy, wildcard: bool
) -> list[Fire]:
    """The fires one candidate wall time produces under the DST policy."""
    shown = wall.strftime("%H:%M:%S" if wall.second or wall.microsecond else "%H:%M")
    if placed.jump:
        if wildcard or dst.gap is GapPolicy.SKIP or placed.jump > MAX_DST_JUMP:
            return []
        return [_fire(placed.early, zone, f"moved from {shown} by the DST gap")]
    if placed.early == placed.late:
        return [_fire(placed.early, zone)]
    if wildcard:  # cron matches the wall clock, which shows this time twice
        return [
            _fire(placed.early, zone, f"first of two {shown}s"),
            _fire(placed.late, zone, f"second of two {shown}s"),
        ]
    if dst.fold is FoldPolicy.FIRST:
        return [_fire(placed.early, zone)]
    if dst.fold is FoldPolicy.LAST:
        return [_fire(placed.late, zone)]
    return [
        _fire(placed.early, zone, f"first of two {shown}s"),
        _fire(placed.late, zone, f"second of two {shown}s"),
    ]


def _first_fire(
    after: datetime, zone: ZoneInfo, dst: DstPolicy, wildcard: bool, walls: _Walls, what: str
) -> Fire:
    """Return the earliest fire strictly after `after` among the walls' fires."""
    since = _utc(after, "after")
    best: Fire | None = None
    try:
        since_local = since.astimezone(zone)
        resume = since_local.replace(tzinfo=None)
        walls.restart(_scan_start(since, zone))
        for _ in range(_MAX_WALLS):
            wall = next(walls)
            placed = _place(wall, zone)
            # placed.early never decreases as walls increase, so nothing later can beat `best`.
            if best is not None and placed.early > best.at:
                return best
            for fire in _fires(wall, placed, zone, dst, wildcard):
                if fire.at > since and (
                    best is None or fire.at < best.at or (fire.at == best.at and not fire.note)
                ):
                    best = fire  # on a tie the real wall time beats one moved onto it by a gap
            plain = not placed.jump and placed.early == placed.late
            if plain and best is not None and best.at <= placed.early:
                return best  # every later wall maps strictly later than a plain one
            if best is not None and placed.early <= since < placed.late:
                # A repeated wall whose first copy has passed: the walls after it up to `since`
                # only offer later second copies, so skip them (a fold can be a day long).
                if since_local.fold:
                    return best  # and past the fold every instant is later than any second copy
                if wall < resume:
                    walls.restart(resume)
            if placed.jump:  # every other wall in this gap maps to the same instant, or none
                walls.restart(placed.early.astimezone(zone).replace(tzinfo=None))
    except (OverflowError, ValueError):  # walked off the end of datetime's range
        raise ScheduleError(
            f"{what}: no fire time after {since.isoformat()} within datetime's range (1..9999)"
        ) from None
    raise ScheduleError(f"{what}: no fire time found after {since.isoformat()}")


def _scan_start(since: datetime, zone: ZoneInfo) -> datetime:
    """The earliest wall time that can map to an instant after `since`."""
    local = since.astimezone(zone)
    wall = local.replace(tzinfo=None)
    offset, repeat = local.utcoffset(), wall.replace(tzinfo=zone, fold=1).utcoffset()
    if local.fold == 0 and offset is not None and repeat is not None and offset > repeat:
        # In a fold's first copy, the second copies of the walls since the fold began are still
        # ahead: start at the fold's first wall, which is the wall clock just after the change.
        change = _transition(since, since + (offset - repeat), zone)
        return change.astimezone(zone).replace(tzinfo=None)
    return wall


def _fire(at: datetime, zone: ZoneInfo, note: str | None = None) -> Fire:
    return Fire(at=at, local=at.astimezone(zone), note=note)


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment!r}")
    return moment.astimezone(UTC)


def _check_wall_time(at: time) -> None:
    if at.tzinfo is not None:
        raise ScheduleError(f"at: {at.isoformat()} must be a wall-clock time without a zone")


def _zone_name(zone: ZoneInfo) -> str:
    return zone.key if zone.key else str(zone)
