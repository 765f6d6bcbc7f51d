"""Fire-time arithmetic: cron in a rule's own zone, the DST policy, intervals and local `at:` times.

Host independence: the process zone is forced to Asia/Kolkata below, so a test that leaned on the
host zone would fail everywhere. Run with `PYTHONTZPATH=` (empty) so zoneinfo reads the pinned
`tzdata` package instead of the system database; CI sets that.
"""

from __future__ import annotations

import os
import time as host_time
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timeos.errors import ScheduleError
from timeos.model import DstPolicy, FoldPolicy, GapPolicy
from timeos.time.cron import (
    CronSchedule,
    Fire,
    compile_cron,
    next_interval,
    next_local_time,
    upcoming,
    weekday_cron,
)

os.environ["TZ"] = "Asia/Kolkata"
host_time.tzset()

DEFAULT = DstPolicy()
SKIP = DstPolicy(gap=GapPolicy.SKIP)
LAST = DstPolicy(fold=FoldPolicy.LAST)
BOTH = DstPolicy(fold=FoldPolicy.BOTH)
ALL_POLICIES = [DstPolicy(gap=g, fold=f) for g in GapPolicy for f in FoldPolicy]
ZONES = [
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Africa/Cairo",
    "America/Santiago",
    "Pacific/Apia",
    "UTC",
]


def local(zone: str, text: str, fold: int = 0) -> datetime:
    """An aware wall time in `zone`; `fold=1` picks the second copy of a repeated time."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone), fold=fold)


def show(fire: Fire) -> str:
    """Render a fire with its weekday and zone abbreviation, so rows assert both."""
    text = f"{fire.local:%a %Y-%m-%d %H:%M %Z}"
    return f"{text} [{fire.note}]" if fire.note else text


def fires(zone: str, expression: str, dst: DstPolicy, after: datetime, count: int) -> list[str]:
    return [show(f) for f in upcoming(compile_cron(expression, ZoneInfo(zone), dst), after, count)]


NY, LON, LHI = "America/New_York", "Europe/London", "Australia/Lord_Howe"
CAI, SCL, APIA = "Africa/Cairo", "America/Santiago", "Pacific/Apia"

# (zone, expression, policy, after, expected fires). The transitions, in local time:
#   New York   2025-03-09 02:00 EST -> 03:00 EDT      2025-11-02 02:00 EDT -> 01:00 EST
#   London     2025-03-30 01:00 GMT -> 02:00 BST      2025-10-26 02:00 BST -> 01:00 GMT
#   Lord Howe  2025-10-05 02:00 +1030 -> 02:30 +11    2025-04-06 02:00 +11 -> 01:30 +1030
#   Cairo      2023-04-28 00:00 EET -> 01:00 EEST     2023-10-26 24:00 EEST -> 23:00 EET
#   Santiago   2024-09-08 00:00 -04 -> 01:00 -03      2024-04-06 24:00 -03 -> 23:00 -04
#   Apia       2011-12-29 24:00 -10 -> 2011-12-31 00:00 +14 (a whole day skipped: > 3h)
DST_ROWS = [
    # ---- New York, spring forward
    (NY, "30 2 * * *", DEFAULT, local(NY, "2025-03-08 12:00"),
     ["Sun 2025-03-09 03:00 EDT [moved from 02:30 by the DST gap]", "Mon 2025-03-10 02:30 EDT"]),
    (NY, "30 2 * * *", SKIP, local(NY, "2025-03-08 12:00"),
     ["Mon 2025-03-10 02:30 EDT", "Tue 2025-03-11 02:30 EDT"]),
    (NY, "0,30 2 * * *", DEFAULT, local(NY, "2025-03-08 12:00"),
     ["Sun 2025-03-09 03:00 EDT [moved from 02:00 by the DST gap]", "Mon 2025-03-10 02:00 EDT"]),
    (NY, "0 2,3 * * *", DEFAULT, local(NY, "2025-03-08 12:00"),
     ["Sun 2025-03-09 03:00 EDT", "Mon 2025-03-10 02:00 EDT", "Mon 2025-03-10 03:00 EDT"]),
    (NY, "0-59 2 * * *", DEFAULT, local(NY, "2025-03-08 12:00"),
     ["Sun 2025-03-09 03:00 EDT [moved from 02:00 by the DST gap]", "Mon 2025-03-10 02:00 EDT"]),
    (NY, "30 * * * *", DEFAULT, local(NY, "2025-03-09 00:45"),
     ["Sun 2025-03-09 01:30 EST", "Sun 2025-03-09 03:30 EDT"]),
    (NY, "30 * * * *", SKIP, local(NY, "2025-03-09 00:45"),
     ["Sun 2025-03-09 01:30 EST", "Sun 2025-03-09 03:30 EDT"]),
    (NY, "*/30 2 * * *", DEFAULT, local(NY, "2025-03-08 12:00"),
     ["Mon 2025-03-10 02:00 EDT", "Mon 2025-03-10 02:30 EDT"]),
    # ---- New York, fall back
    (NY, "30 1 * * *", DEFAULT, local(NY, "2025-11-01 12:00"),
     ["Sun 2025-11-02 01:30 EDT", "Mon 2025-11-03 01:30 EST"]),
    (NY, "30 1 * * *", LAST, local(NY, "2025-11-01 12:00"),
     ["Sun 2025-11-02 01:30 EST", "Mon 2025-11-03 01:30 EST"]),
    (NY, "30 1 * * *", BOTH, local(NY, "2025-11-01 12:00"),
     ["Sun 2025-11-02 01:30 EDT [first of two 01:30s]",
      "Sun 2025-11-02 01:30 EST [second of two 01:30s]", "Mon 2025-11-03 01:30 EST"]),
    (NY, "30 1 * * *", BOTH, local(NY, "2025-11-02 01:45"),
     ["Sun 2025-11-02 01:30 EST [second of two 01:30s]", "Mon 2025-11-03 01:30 EST"]),
    (NY, "30 1 * * *", DEFAULT, local(NY, "2025-11-02 01:45"),
     ["Mon 2025-11-03 01:30 EST"]),
    (NY, "0 2 * * *", BOTH, local(NY, "2025-11-01 12:00"),
     ["Sun 2025-11-02 02:00 EST", "Mon 2025-11-03 02:00 EST"]),
    (NY, "0 * * * *", DEFAULT, local(NY, "2025-11-02 00:30"),
     ["Sun 2025-11-02 01:00 EDT [first of two 01:00s]",
      "Sun 2025-11-02 01:00 EST [second of two 01:00s]", "Sun 2025-11-02 02:00 EST"]),
    (NY, "0 * * * *", LAST, local(NY, "2025-11-02 00:30"),
     ["Sun 2025-11-02 01:00 EDT [first of two 01:00s]",
      "Sun 2025-11-02 01:00 EST [second of two 01:00s]", "Sun 2025-11-02 02:00 EST"]),
    (NY, "*/20 1 * * *", DEFAULT, local(NY, "2025-11-02 00:30"),
     ["Sun 2025-11-02 01:00 EDT [first of two 01:00s]",
      "Sun 2025-11-02 01:20 EDT [first of two 01:20s]",
      "Sun 2025-11-02 01:40 EDT [first of two 01:40s]",
      "Sun 2025-11-02 01:00 EST [second of two 01:00s]",
      "Sun 2025-11-02 01:20 EST [second of two 01:20s]",
      "Sun 2025-11-02 01:40 EST [second of two 01:40s]",
      "Mon 2025-11-03 01:00 EST"]),
    (NY, "0,30 * * * *", DEFAULT, local(NY, "2025-11-02 01:00", fold=1),
     ["Sun 2025-11-02 01:30 EST [second of two 01:30s]", "Sun 2025-11-02 02:00 EST"]),
    # ---- London
    (LON, "30 1 * * *", DEFAULT, local(LON, "2025-03-29 12:00"),
     ["Sun 2025-03-30 02:00 BST [moved from 01:30 by the DST gap]", "Mon 2025-03-31 01:30 BST"]),
    (LON, "@hourly", DEFAULT, local(LON, "2025-03-30 00:30"),
     ["Sun 2025-03-30 02:00 BST", "Sun 2025-03-30 03:00 BST"]),
    (LON, "30 1 * * *", BOTH, local(LON, "2025-10-25 12:00"),
     ["Sun 2025-10-26 01:30 BST [first of two 01:30s]",
      "Sun 2025-10-26 01:30 GMT [second of two 01:30s]", "Mon 2025-10-27 01:30 GMT"]),
    (LON, "@daily", BOTH, local(LON, "2025-10-25 12:00"),
     ["Sun 2025-10-26 00:00 BST", "Mon 2025-10-27 00:00 GMT"]),
    # ---- Lord Howe: the clock moves 30 minutes
    (LHI, "15 2 * * *", DEFAULT, local(LHI, "2025-10-04 12:00"),
     ["Sun 2025-10-05 02:30 +11 [moved from 02:15 by the DST gap]", "Mon 2025-10-06 02:15 +11"]),
    (LHI, "30 2 * * *", DEFAULT, local(LHI, "2025-10-04 12:00"),
     ["Sun 2025-10-05 02:30 +11", "Mon 2025-10-06 02:30 +11"]),
    (LHI, "*/15 * * * *", DEFAULT, local(LHI, "2025-10-05 01:40"),
     ["Sun 2025-10-05 01:45 +1030", "Sun 2025-10-05 02:30 +11", "Sun 2025-10-05 02:45 +11"]),
    (LHI, "45 1 * * *", DEFAULT, local(LHI, "2025-04-05 12:00"),
     ["Sun 2025-04-06 01:45 +11", "Mon 2025-04-07 01:45 +1030"]),
    (LHI, "45 1 * * *", BOTH, local(LHI, "2025-04-05 12:00"),
     ["Sun 2025-04-06 01:45 +11 [first of two 01:45s]",
      "Sun 2025-04-06 01:45 +1030 [second of two 01:45s]", "Mon 2025-04-07 01:45 +1030"]),
    (LHI, "15 1 * * *", BOTH, local(LHI, "2025-04-05 12:00"),
     ["Sun 2025-04-06 01:15 +11", "Mon 2025-04-07 01:15 +1030"]),
    (LHI, "*/15 1 * * *", DEFAULT, local(LHI, "2025-04-06 01:20"),
     ["Sun 2025-04-06 01:30 +11 [first of two 01:30s]",
      "Sun 2025-04-06 01:45 +11 [first of two 01:45s]",
      "Sun 2025-04-06 01:30 +1030 [second of two 01:30s]",
      "Sun 2025-04-06 01:45 +1030 [second of two 01:45s]", "Mon 2025-04-07 01:00 +1030"]),
    # ---- Cairo: the change day starts at 01:00; the fold is the last hour of a Thursday
    (CAI, "0 0 * * *", DEFAULT, local(CAI, "2023-04-27 12:00"),
     ["Fri 2023-04-28 01:00 EEST [moved from 00:00 by the DST gap]", "Sat 2023-04-29 00:00 EEST"]),
    (CAI, "30 0 * * fri", DEFAULT, local(CAI, "2023-04-27 12:00"),
     ["Fri 2023-04-28 01:00 EEST [moved from 00:30 by the DST gap]", "Fri 2023-05-05 00:30 EEST"]),
    (CAI, "*/30 * * * *", DEFAULT, local(CAI, "2023-04-27 23:10"),
     ["Thu 2023-04-27 23:30 EET", "Fri 2023-04-28 01:00 EEST", "Fri 2023-04-28 01:30 EEST"]),
    (CAI, "30 23 * * *", DEFAULT, local(CAI, "2023-10-26 12:00"),
     ["Thu 2023-10-26 23:30 EEST", "Fri 2023-10-27 23:30 EET"]),
    (CAI, "30 23 * * *", LAST, local(CAI, "2023-10-26 12:00"),
     ["Thu 2023-10-26 23:30 EET", "Fri 2023-10-27 23:30 EET"]),
    # ---- Santiago: midnight gap in September, Saturday 23:00 twice in April
    (SCL, "0 0 * * *", DEFAULT, local(SCL, "2024-09-07 12:00"),
     ["Sun 2024-09-08 01:00 -03 [moved from 00:00 by the DST gap]", "Mon 2024-09-09 00:00 -03"]),
    (SCL, "0 0 * * *", SKIP, local(SCL, "2024-09-07 12:00"),
     ["Mon 2024-09-09 00:00 -03", "Tue 2024-09-10 00:00 -03"]),
    (SCL, "0 0 * * 0", DEFAULT, local(SCL, "2024-09-07 12:00"),
     ["Sun 2024-09-08 01:00 -03 [moved from 00:00 by the DST gap]", "Sun 2024-09-15 00:00 -03"]),
    (SCL, "0 23 * * *", BOTH, local(SCL, "2024-04-06 12:00"),
     ["Sat 2024-04-06 23:00 -03 [first of two 23:00s]",
      "Sat 2024-04-06 23:00 -04 [second of two 23:00s]", "Sun 2024-04-07 23:00 -04"]),
    # ---- Apia skips 2011-12-30: a clock correction, so nothing in it fires, even fixed jobs
    (APIA, "0 12 * * *", DEFAULT, local(APIA, "2011-12-29 00:00"),
     ["Thu 2011-12-29 12:00 -10", "Sat 2011-12-31 12:00 +14"]),
    (APIA, "0 0 * * *", DEFAULT, local(APIA, "2011-12-29 12:00"),
     ["Sat 2011-12-31 00:00 +14", "Sun 2012-01-01 00:00 +14"]),
    (APIA, "0 9 30 12 *", DEFAULT, local(APIA, "2011-12-01 00:00"),
     ["Sun 2012-12-30 09:00 +14"]),
    (APIA, "0 0 * * 5", DEFAULT, local(APIA, "2011-12-23 12:00"),
     ["Fri 2012-01-06 00:00 +14"]),
    (APIA, "*/30 * * * *", DEFAULT, local(APIA, "2011-12-29 23:10"),
     ["Thu 2011-12-29 23:30 -10", "Sat 2011-12-31 00:00 +14"]),
]  # fmt: skip
DST_IDS = [
    "ny-spring-fixed-moved-to-0300",
    "ny-spring-fixed-skip",
    "ny-spring-two-gap-times-fire-once",
    "ny-spring-moved-and-real-0300-fire-once",
    "ny-spring-range-minute-is-fixed-time",
    "ny-spring-wildcard-hourly-skips-gap",
    "ny-spring-wildcard-skip-policy-same",
    "ny-spring-wildcard-in-gap-hour-skips-day",
    "ny-fall-fixed-first",
    "ny-fall-fixed-last",
    "ny-fall-fixed-both",
    "ny-fall-fixed-both-from-inside-first-copy",
    "ny-fall-fixed-first-from-inside-first-copy",
    "ny-fall-0200-is-not-repeated",
    "ny-fall-wildcard-hourly-both-copies",
    "ny-fall-wildcard-ignores-fold-policy",
    "ny-fall-wildcard-minutes-both-copies",
    "ny-fall-wildcard-from-second-copy",
    "london-spring-fixed-moved",
    "london-spring-hourly-macro",
    "london-fall-fixed-both",
    "london-fall-daily-unaffected",
    "lord-howe-spring-fixed-moved-30min",
    "lord-howe-spring-0230-exists",
    "lord-howe-spring-wildcard",
    "lord-howe-fall-fixed-first",
    "lord-howe-fall-fixed-both",
    "lord-howe-fall-0115-not-repeated",
    "lord-howe-fall-wildcard-half-hour-twice",
    "cairo-midnight-gap-fixed",
    "cairo-midnight-gap-friday-stays-friday",
    "cairo-midnight-gap-wildcard",
    "cairo-fall-fixed-first",
    "cairo-fall-fixed-last",
    "santiago-midnight-gap-fixed",
    "santiago-midnight-gap-skip",
    "santiago-sunday-midnight-moved-stays-sunday",
    "santiago-fall-saturday-2300-both",
    "apia-skipped-day-noon-does-not-fire",
    "apia-midnight-after-jump-is-real",
    "apia-dec-30-next-year",
    "apia-friday-skipped",
    "apia-wildcard",
]


@pytest.mark.parametrize(("zone", "expression", "dst", "after", "expected"), DST_ROWS, ids=DST_IDS)
def test_dst_gaps_and_folds(
    zone: str, expression: str, dst: DstPolicy, after: datetime, expected: list[str]
) -> None:
    assert fires(zone, expression, dst, after, len(expected)) == expected


# (expression, after as a UTC wall time, expected fires)
CALENDAR_ROWS = [
    ("0 9 13 * 5", "2025-06-01", ["Fri 2025-06-06 09:00 UTC", "Fri 2025-06-13 09:00 UTC",
     "Fri 2025-06-20 09:00 UTC", "Fri 2025-06-27 09:00 UTC", "Fri 2025-07-04 09:00 UTC",
     "Fri 2025-07-11 09:00 UTC", "Sun 2025-07-13 09:00 UTC"]),
    ("0 9 1-3 * mon", "2025-09-01", ["Mon 2025-09-01 09:00 UTC", "Tue 2025-09-02 09:00 UTC",
     "Wed 2025-09-03 09:00 UTC", "Mon 2025-09-08 09:00 UTC"]),
    ("0 9 */2 * 1", "2025-01-01", ["Mon 2025-01-13 09:00 UTC", "Mon 2025-01-27 09:00 UTC",
     "Mon 2025-02-03 09:00 UTC"]),
    ("0 9 1-7 * */2", "2025-01-01", ["Thu 2025-01-02 09:00 UTC", "Sat 2025-01-04 09:00 UTC",
     "Sun 2025-01-05 09:00 UTC", "Tue 2025-01-07 09:00 UTC", "Sat 2025-02-01 09:00 UTC"]),
    ("0 9 ? * mon", "2025-01-01", ["Mon 2025-01-06 09:00 UTC", "Mon 2025-01-13 09:00 UTC"]),
    ("0 9 1 * 1#2", "2025-01-01", ["Wed 2025-01-01 09:00 UTC", "Mon 2025-01-13 09:00 UTC",
     "Sat 2025-02-01 09:00 UTC", "Mon 2025-02-10 09:00 UTC"]),
    ("0 9 29 2 */7", "2025-01-01", ["Sun 2032-02-29 09:00 UTC", "Sun 2060-02-29 09:00 UTC"]),
    ("0 0 29 2 *", "2025-01-01", ["Tue 2028-02-29 00:00 UTC", "Sun 2032-02-29 00:00 UTC"]),
    ("0 0 29 2 *", "2028-02-29", ["Sun 2032-02-29 00:00 UTC"]),
    ("0 9 31 * *", "2025-02-01", ["Mon 2025-03-31 09:00 UTC", "Sat 2025-05-31 09:00 UTC"]),
    ("0 0 L * *", "2028-01-15", ["Mon 2028-01-31 00:00 UTC", "Tue 2028-02-29 00:00 UTC",
     "Fri 2028-03-31 00:00 UTC", "Sun 2028-04-30 00:00 UTC"]),
    ("0 0 L 2 *", "2025-03-01", ["Sat 2026-02-28 00:00 UTC", "Sun 2027-02-28 00:00 UTC",
     "Tue 2028-02-29 00:00 UTC"]),
    ("0 0 1,L * *", "2025-01-15", ["Fri 2025-01-31 00:00 UTC", "Sat 2025-02-01 00:00 UTC",
     "Fri 2025-02-28 00:00 UTC"]),
    ("0 0 * * L5", "2025-01-01", ["Fri 2025-01-31 00:00 UTC", "Fri 2025-02-28 00:00 UTC",
     "Fri 2025-03-28 00:00 UTC"]),
    ("0 0 * * 5L", "2025-01-01", ["Fri 2025-01-31 00:00 UTC", "Fri 2025-02-28 00:00 UTC",
     "Fri 2025-03-28 00:00 UTC"]),
    ("0 9 * * 1#2", "2025-01-01", ["Mon 2025-01-13 09:00 UTC", "Mon 2025-02-10 09:00 UTC",
     "Mon 2025-03-10 09:00 UTC"]),
    ("0 9 * * MON#2", "2025-01-01", ["Mon 2025-01-13 09:00 UTC", "Mon 2025-02-10 09:00 UTC"]),
    ("0 0 * * 6#5", "2025-01-01", ["Sat 2025-03-29 00:00 UTC", "Sat 2025-05-31 00:00 UTC"]),
    ("0 0 15W * *", "2025-01-01", ["Wed 2025-01-15 00:00 UTC", "Fri 2025-02-14 00:00 UTC",
     "Fri 2025-03-14 00:00 UTC", "Tue 2025-04-15 00:00 UTC"]),
    ("0 9 * jan,jul mon-fri", "2025-06-30", ["Tue 2025-07-01 09:00 UTC",
     "Wed 2025-07-02 09:00 UTC"]),
    ("0 9 * JAN Mon", "2025-06-30", ["Mon 2026-01-05 09:00 UTC", "Mon 2026-01-12 09:00 UTC"]),
    ("0 9 * * 0", "2025-01-01", ["Sun 2025-01-05 09:00 UTC", "Sun 2025-01-12 09:00 UTC"]),
    ("0 9 * * 7", "2025-01-01", ["Sun 2025-01-05 09:00 UTC", "Sun 2025-01-12 09:00 UTC"]),
    ("0 9 * * sun", "2025-01-01", ["Sun 2025-01-05 09:00 UTC", "Sun 2025-01-12 09:00 UTC"]),
    ("0 9 * * 7-7", "2025-01-01", ["Sun 2025-01-05 09:00 UTC", "Sun 2025-01-12 09:00 UTC"]),
    ("0 9 * * 0-7", "2025-01-01", ["Wed 2025-01-01 09:00 UTC", "Thu 2025-01-02 09:00 UTC"]),
    ("0 9 * * fri-sat,sun-mon", "2025-01-01", ["Fri 2025-01-03 09:00 UTC",
     "Sat 2025-01-04 09:00 UTC", "Sun 2025-01-05 09:00 UTC", "Mon 2025-01-06 09:00 UTC",
     "Fri 2025-01-10 09:00 UTC"]),
    ("0 9 * * mon-7", "2025-01-01", ["Wed 2025-01-01 09:00 UTC", "Thu 2025-01-02 09:00 UTC"]),
    ("0 9 * * 1-1", "2025-01-01", ["Mon 2025-01-06 09:00 UTC", "Mon 2025-01-13 09:00 UTC"]),
    ("5-5 9 * jan-jan *", "2025-01-01", ["Wed 2025-01-01 09:05 UTC", "Thu 2025-01-02 09:05 UTC"]),
    ("10/20 * * * *", "2025-01-01", ["Wed 2025-01-01 00:10 UTC", "Wed 2025-01-01 00:30 UTC",
     "Wed 2025-01-01 00:50 UTC", "Wed 2025-01-01 01:10 UTC"]),
    ("@hourly", "2025-01-01 00:30", ["Wed 2025-01-01 01:00 UTC", "Wed 2025-01-01 02:00 UTC"]),
    ("@daily", "2025-01-01 00:30", ["Thu 2025-01-02 00:00 UTC"]),
    ("@midnight", "2025-01-01 00:30", ["Thu 2025-01-02 00:00 UTC"]),
    ("@weekly", "2025-01-01", ["Sun 2025-01-05 00:00 UTC", "Sun 2025-01-12 00:00 UTC"]),
    ("@monthly", "2025-01-01", ["Sat 2025-02-01 00:00 UTC"]),
    ("@yearly", "2025-01-01", ["Thu 2026-01-01 00:00 UTC"]),
    ("@ANNUALLY", "2025-01-01", ["Thu 2026-01-01 00:00 UTC"]),
]  # fmt: skip
CALENDAR_IDS = [
    "or-dom-13th-or-friday",
    "or-dom-range-or-monday",
    "and-dom-starts-with-star",
    "and-dow-starts-with-star",
    "and-question-mark-is-star",
    "or-dom-1st-or-second-monday",
    "and-leap-day-on-sunday",
    "leap-day",
    "leap-day-from-leap-day",
    "month-end-31st-skips-short-months",
    "last-day-L",
    "last-day-of-february-L",
    "first-and-last-day",
    "last-friday-L5",
    "last-friday-5L",
    "second-monday-hash",
    "second-monday-by-name",
    "fifth-saturday-only-when-it-exists",
    "nearest-weekday-15W",
    "month-and-day-names",
    "names-case-insensitive",
    "sunday-is-0",
    "sunday-is-7",
    "sunday-by-name",
    "equal-range-7-7-is-sunday",
    "range-0-7-is-every-day",
    "fri-to-mon-as-two-ranges",
    "range-to-7-reaches-sunday",
    "equal-range-1-1-is-monday-only",
    "equal-ranges-are-one-value",
    "start-slash-step",
    "macro-hourly",
    "macro-daily",
    "macro-midnight",
    "macro-weekly-sunday",
    "macro-monthly",
    "macro-yearly",
    "macro-annually-upper-case",
]


@pytest.mark.parametrize(("expression", "after", "expected"), CALENDAR_ROWS, ids=CALENDAR_IDS)
def test_calendar_fields(expression: str, after: str, expected: list[str]) -> None:
    assert fires("UTC", expression, DEFAULT, local("UTC", after), len(expected)) == expected


INVALID_ROWS = [
    ("", "empty"),
    ("   ", "empty"),
    ("* * * *", "has 4 fields; expected 5"),
    ("0 * * * * *", "has 6 fields; expected 5"),
    ("0 0 12 * * ? 2030", "has 7 fields; expected 5"),
    ("@reboot", "@reboot is not a time schedule"),
    ("@every 5m", "unknown macro"),
    ("60 * * * *", "minute field '60' is invalid (out of range)"),
    ("0 24 * * *", "hour field '24' is invalid"),
    ("0 0 32 * *", "day-of-month field '32' is invalid"),
    ("0 0 0 * *", "day-of-month field '0' is invalid"),
    ("0 0 * 13 *", "month field '13' is invalid"),
    ("0 0 * Foo *", "month field 'Foo' is invalid"),
    ("0 0 * * 8", "day-of-week field '8' is invalid"),
    ("*/0 * * * *", "minute field '*/0' is invalid ('*/0' has step 0; a step must be 1 or more)"),
    ("a b c d e", "minute field 'a' is invalid"),
    ("0 0 LW * *", "day-of-month field 'LW' is invalid"),
    ("0 0 L-2 * *", "day-of-month field 'L-2' is invalid"),
    ("0 0 15W,20 * *", "day-of-month field '15W,20' is invalid ('W' can only be used"),
    ("0 0 * * 1#6", "day-of-week field '1#6' is invalid"),
    ("0 0 * * 1-5,2#1", "day-of-week field '1-5,2#1' is invalid (day-of-week field does not"),
    ("R * * * *", "minute field 'R': hashed 'H' and random 'R' values are not supported"),
    ("0 H * * *", "hour field 'H': hashed"),
    ("0 0 30 2 *", "never fires"),
    ("0 0 31 4,6,9,11 *", "never fires"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("expression", "message"), INVALID_ROWS, ids=[repr(e) for e, _ in INVALID_ROWS]
)
def test_invalid_expressions_name_the_expression_and_field(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        compile_cron(expression, ZoneInfo("UTC"))
    assert message in caught.value.message
    if expression.strip():
        assert repr(expression) in caught.value.message
    assert caught.value.code == "invalid_schedule"


# What cron rejects (or reads differently) but croniter would accept: refused in our own words.
CRON_REJECTS = [
    ("5-5/0 * * * *", "minute field '5-5/0' is invalid ('5-5/0' has step 0"),
    ("0 0 1-31/00 * *", "day-of-month field '1-31/00' is invalid ('1-31/00' has step 0"),
    ("0 0 6-0 * *", "day-of-month field '6-0' is invalid (range '6-0' ends at 0, outside 1-31)"),
    ("0 0 1 1-0 *", "month field '1-0' is invalid (range '1-0' ends at 0, outside 1-12)"),
    ("0 0 0-5 * *", "day-of-month field '0-5' is invalid (range '0-5' ends at 0, outside 1-31)"),
    ("5-1 * * * *", "minute field '5-1' is invalid (range '5-1' runs backwards and cron does"
     " not wrap around; use '5-59,0-1')"),
    ("0 22-2 * * *", "hour field '22-2' is invalid (range '22-2' runs backwards"),
    ("0 0 31-1 * *", "day-of-month field '31-1' is invalid (range '31-1' runs backwards"),
    ("0 0 * nov-feb *", "use 'nov-dec,jan-feb'"),
    ("0 9 * * fri-mon", "use 'fri-sat,sun-mon'"),
    ("0 9 * * 5-1", "use '5-6,0-1'"),
    ("0 9 * * mon-sun", "use 'mon-7' (7 is Sunday too)"),
    ("0 9 * * thu-sun/2", "use two ranges, each with the step"),
    ("0 9 * * 7-0", "day-of-week field '7-0' is invalid (range '7-0': 7 and 0 are both Sunday;"
     " write 0 or 7 alone)"),
    ("0 9 * * *,5#2", "day-of-week field '*,5#2' is invalid ('*' cannot be listed with '#' or 'L'"
     " items)"),
    ("0 9 * * 5L,*", "day-of-week field '5L,*' is invalid ('*' cannot be listed"),
    ("0 9 * * L5,*/2", "day-of-week field 'L5,*/2' is invalid ('*/2' cannot be listed"),
    ("0 9 *,L * *", "day-of-month field '*,L' is invalid ('*' cannot be listed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("expression", "message"),
    CRON_REJECTS,
    ids=["step-0-on-equal-range", "step-00", "dom-range-ends-at-0", "month-range-ends-at-0",
         "dom-range-starts-at-0", "reversed-minutes", "reversed-hours-over-midnight",
         "reversed-days", "reversed-month-names", "reversed-day-names", "reversed-day-numbers",
         "range-ending-at-sunday-0", "reversed-range-with-step", "dow-7-0",
         "star-listed-with-hash", "star-listed-after-L", "star-step-listed-with-L",
         "dom-star-listed-with-L"],
)  # fmt: skip
def test_cron_rejects_what_cron_rejects_in_our_own_words(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        compile_cron(expression, ZoneInfo("UTC"))
    assert caught.value.message.startswith(f"cron {expression!r}: ")
    assert message in caught.value.message
    assert "not acceptable" not in caught.value.message  # croniter's wording stays inside


@pytest.mark.parametrize(
    ("expression", "wildcard"),
    [
        ("* * * * *", True),
        ("*/15 9 * * *", True),
        ("0 * * * *", True),
        ("0 */2 * * *", True),
        ("@hourly", True),
        ("0 9 * * *", False),
        ("0-59 9 * * *", False),
        ("0,30 1-3 * * *", False),
        ("@daily", False),
        ("0 0 * * *", False),
    ],
    ids=["every-minute", "minute-step", "hourly", "hour-step", "macro-hourly", "fixed",
         "minute-range-is-fixed", "lists-and-ranges-are-fixed", "macro-daily", "midnight"],
)  # fmt: skip
def test_wildcard_means_minute_or_hour_starts_with_star(expression: str, wildcard: bool) -> None:
    assert compile_cron(expression, ZoneInfo("UTC")).wildcard is wildcard


def test_fire_is_utc_with_local_in_the_schedule_zone() -> None:
    zone = ZoneInfo(NY)
    fire = compile_cron("0 * * * *", zone).next_fire(local(NY, "2025-11-02 01:00"))
    assert fire.at == datetime(2025, 11, 2, 6, 0, tzinfo=UTC)
    assert fire.at.tzinfo is UTC
    assert fire.local.tzinfo is zone
    assert (fire.local.hour, fire.local.fold) == (1, 1)
    # PEP 495: an aware datetime with fold=1 in a repeated hour never equals one in another zone,
    # so compare instants through UTC.
    assert fire.local != fire.at
    assert fire.local.astimezone(UTC) == fire.at


def test_next_fire_accepts_after_in_any_zone_and_is_repeatable() -> None:
    schedule = compile_cron("30 2 * * *", ZoneInfo(NY))
    after_utc = datetime(2025, 3, 8, 17, 0, tzinfo=UTC)
    first = schedule.next_fire(after_utc)
    assert schedule.next_fire(after_utc) == first
    assert schedule.next_fire(after_utc.astimezone(ZoneInfo("Asia/Tokyo"))) == first
    assert show(first) == "Sun 2025-03-09 03:00 EDT [moved from 02:30 by the DST gap]"


def test_next_fire_rejects_naive_after() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        compile_cron("* * * * *", ZoneInfo("UTC")).next_fire(datetime(2025, 1, 1))


def test_upcoming_returns_count_fires() -> None:
    schedule = compile_cron("@hourly", ZoneInfo("UTC"))
    assert upcoming(schedule, local("UTC", "2025-01-01"), 0) == []
    assert len(upcoming(schedule, local("UTC", "2025-01-01"), 24)) == 24


def test_schedule_exposes_its_inputs() -> None:
    schedule = compile_cron("0 9 * * MON", ZoneInfo(NY), BOTH)
    assert isinstance(schedule, CronSchedule)
    assert (schedule.expression, schedule.zone, schedule.dst) == ("0 9 * * MON", ZoneInfo(NY), BOTH)
    assert schedule.wildcard is False


def test_fingerprint_changes_exactly_with_expression_zone_or_policy() -> None:
    base = compile_cron("0 9 * * MON", ZoneInfo(NY))
    assert base.fingerprint() == "0 9 * * mon|America/New_York|gap=run_after|fold=first"
    assert compile_cron(" 0  9 * * mon ", ZoneInfo(NY)).fingerprint() == base.fingerprint()
    assert compile_cron("0 9 * * MON", ZoneInfo(NY), DEFAULT).fingerprint() == base.fingerprint()
    others = {
        compile_cron("0 10 * * MON", ZoneInfo(NY)).fingerprint(),
        compile_cron("0 9 * * MON", ZoneInfo(LON)).fingerprint(),
        compile_cron("0 9 * * MON", ZoneInfo(NY), SKIP).fingerprint(),
        compile_cron("0 9 * * MON", ZoneInfo(NY), LAST).fingerprint(),
    }
    assert base.fingerprint() not in others
    assert len(others) == 4


# ---- weekday_cron -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "at", "expected"),
    [
        (["monday"], time(9, 0), "0 9 * * 1"),
        ("monday", time(9, 0), "0 9 * * 1"),
        (["monday", "friday"], time(9, 0), "0 9 * * 1,5"),
        (["Friday", "mon"], time(17, 30), "30 17 * * 1,5"),
        ("weekday", time(9, 0), "0 9 * * 1-5"),
        (["weekend"], time(10, 15), "15 10 * * 0,6"),
        (["sunday"], time(0, 0), "0 0 * * 0"),
        (["weekday", "weekend"], time(8, 0), "0 8 * * *"),
    ],
    ids=["one-day", "single-string", "two-days", "mixed-case-and-short", "weekday", "weekend",
         "midnight-not-hourly", "every-day"],
)  # fmt: skip
def test_weekday_cron(days: list[str] | str, at: time, expected: str) -> None:
    assert weekday_cron(days, at) == expected


def test_weekday_cron_without_at_fires_once_at_midnight() -> None:
    schedule = compile_cron(weekday_cron(["monday"], time(0, 0)), ZoneInfo(NY))
    assert schedule.wildcard is False
    assert [show(f) for f in upcoming(schedule, local(NY, "2025-06-01"), 2)] == [
        "Mon 2025-06-02 00:00 EDT",
        "Mon 2025-06-09 00:00 EDT",
    ]


@pytest.mark.parametrize(
    ("days", "at", "message"),
    [
        (["funday"], time(9), "unknown day 'funday'"),
        ([], time(9), "at least one day"),
        (["monday"], time(9, 0, 30), "has seconds"),
        (["monday"], time(9, tzinfo=UTC), "without a zone"),
    ],
    ids=["unknown-name", "no-days", "seconds", "aware-time"],
)
def test_weekday_cron_rejects(days: list[str], at: time, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        weekday_cron(days, at)


# ---- next_interval ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("anchor", "every", "after", "expected"),
    [
        (local(NY, "2025-03-08 12:00"), timedelta(hours=24), local(NY, "2025-03-08 12:30"),
         local(NY, "2025-03-09 13:00")),
        (local(NY, "2025-11-01 12:00"), timedelta(hours=24), local(NY, "2025-11-01 12:30"),
         local(NY, "2025-11-02 11:00")),
        (local(NY, "2025-03-08 12:00"), timedelta(minutes=30), local(NY, "2025-03-08 11:00"),
         local(NY, "2025-03-08 12:00")),
        (local(NY, "2025-03-08 12:00"), timedelta(minutes=30), local(NY, "2025-03-08 12:00"),
         local(NY, "2025-03-08 12:30")),
        (local(NY, "2025-03-08 12:00"), timedelta(minutes=30), local(NY, "2025-03-08 12:29"),
         local(NY, "2025-03-08 12:30")),
        (local("UTC", "2000-01-01"), timedelta(seconds=7), local("UTC", "2030-01-01"),
         local("UTC", "2030-01-01 00:00:03")),
    ],
    ids=["24h-across-spring-is-1300-edt", "24h-across-fall-is-1100-est", "before-anchor",
         "at-anchor-is-strict", "between-ticks", "many-periods-exact"],
)  # fmt: skip
def test_next_interval_counts_elapsed_time(
    anchor: datetime, every: timedelta, after: datetime, expected: datetime
) -> None:
    result = next_interval(anchor, every, after)
    assert result == expected
    assert result.tzinfo is UTC


def test_next_interval_rejects_non_positive_interval() -> None:
    with pytest.raises(ScheduleError, match="must be positive"):
        next_interval(local("UTC", "2025-01-01"), timedelta(0), local("UTC", "2025-01-02"))


# ---- next_local_time ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "after", "at", "dst", "expected"),
    [
        (NY, local(NY, "2025-03-09 00:00"), time(2, 30), DEFAULT,
         "Sun 2025-03-09 03:00 EDT [moved from 02:30 by the DST gap]"),
        (NY, local(NY, "2025-03-09 03:00"), time(2, 30), DEFAULT,
         "Sun 2025-03-09 03:00 EDT [moved from 02:30 by the DST gap]"),
        (NY, local(NY, "2025-03-09 00:00"), time(2, 30), SKIP, "Mon 2025-03-10 02:30 EDT"),
        (NY, local(NY, "2025-11-02 00:00"), time(1, 30), DEFAULT, "Sun 2025-11-02 01:30 EDT"),
        (NY, local(NY, "2025-11-02 00:00"), time(1, 30), LAST, "Sun 2025-11-02 01:30 EST"),
        (NY, local(NY, "2025-11-02 01:45"), time(1, 30), DEFAULT, "Mon 2025-11-03 01:30 EST"),
        (NY, local(NY, "2025-11-02 01:45"), time(1, 30), BOTH,
         "Sun 2025-11-02 01:30 EST [second of two 01:30s]"),
        (NY, local(NY, "2025-06-02 10:00"), time(10, 0), DEFAULT, "Mon 2025-06-02 10:00 EDT"),
        (NY, local(NY, "2025-06-02 10:00:01"), time(10, 0), DEFAULT, "Tue 2025-06-03 10:00 EDT"),
        (LHI, local(LHI, "2025-10-05 00:00"), time(2, 10), DEFAULT,
         "Sun 2025-10-05 02:30 +11 [moved from 02:10 by the DST gap]"),
        (CAI, local(CAI, "2023-04-27 23:00"), time(0, 0), DEFAULT,
         "Fri 2023-04-28 01:00 EEST [moved from 00:00 by the DST gap]"),
        (APIA, local(APIA, "2011-12-29 12:00"), time(9, 0), DEFAULT, "Sat 2011-12-31 09:00 +14"),
    ],
    ids=["gap-moved", "gap-at-the-jump-is-inclusive", "gap-skip", "fold-first", "fold-last",
         "fold-first-already-passed", "fold-both-second-copy", "exactly-at-is-inclusive",
         "just-after-is-tomorrow", "lord-howe-gap", "cairo-midnight-gap", "apia-skipped-day"],
)  # fmt: skip
def test_next_local_time(
    zone: str, after: datetime, at: time, dst: DstPolicy, expected: str
) -> None:
    assert show(next_local_time(after, at, ZoneInfo(zone), dst)) == expected


# ---- properties ---------------------------------------------------------------------------------

EXPRESSIONS = [
    "* * * * *",
    "*/7 * * * *",
    "0 * * * *",
    "*/20 1-2 * * *",
    "30 1 * * *",
    "0 2 * * *",
    "0,30 0-3 * * *",
    "0 0 * * *",
    "30 2 * * 0",
    "59 23 * * *",
    "0 0 L * *",
    "0 9 1 * 1#2",
    "0 0 13 * 5",
    "0 0 29 2 *",
    "@hourly",
    "@weekly",
]
# UTC instants of real offset changes, so examples land next to gaps and folds, not just anywhere.
TRANSITIONS = {
    NY: ["2025-03-09T07:00", "2025-11-02T06:00", "2007-03-11T07:00", "2030-11-03T06:00"],
    LON: ["2025-03-30T01:00", "2025-10-26T01:00"],
    LHI: ["2025-04-05T15:00", "2025-10-04T15:30"],
    CAI: ["2023-04-27T22:00", "2023-10-26T21:00"],
    SCL: ["2024-04-07T03:00", "2024-09-08T04:00"],
    APIA: ["2011-12-30T10:00", "2011-04-02T14:00", "2011-09-24T14:00"],
    "UTC": ["2025-01-01T00:00"],
}


@st.composite
def starts(draw: st.DrawFn, zone: str) -> datetime:
    """A start instant in 2000-2035, half the time within a few hours of a transition."""
    if draw(st.booleans()):
        base = datetime.fromisoformat(draw(st.sampled_from(TRANSITIONS[zone]))).replace(tzinfo=UTC)
        return base + timedelta(seconds=draw(st.integers(-6 * 3600, 6 * 3600)))
    naive = draw(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2035, 12, 31)))
    return naive.replace(tzinfo=UTC)


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, str, DstPolicy, datetime]:
    zone = draw(st.sampled_from(ZONES))
    expression = draw(st.sampled_from(EXPRESSIONS))
    return expression, zone, draw(st.sampled_from(ALL_POLICIES)), draw(starts(zone))


@settings(max_examples=200, deadline=None)
@given(cases())
def test_fire_times_strictly_increase_and_never_repeat(
    case: tuple[str, str, DstPolicy, datetime],
) -> None:
    expression, zone, dst, start = case
    schedule = compile_cron(expression, ZoneInfo(zone), dst)
    after, seen = start, set()
    for _ in range(50):
        fire = schedule.next_fire(after)
        assert fire.at > after
        assert fire.at not in seen
        assert fire.local.astimezone(UTC) == fire.at
        # Nothing is skipped: asking from just before a fire finds that same fire.
        assert schedule.next_fire(fire.at - timedelta(microseconds=1)) == fire
        seen.add(fire.at)
        after = fire.at


# Wildcard jobs fire at exactly the instants whose local wall clock matches: a brute-force oracle.
WILDCARD_ORACLES = {
    "*/15 * * * *": lambda wall: wall.minute % 15 == 0,
    "0 * * * *": lambda wall: wall.minute == 0,
    "*/20 1-2 * * *": lambda wall: wall.hour in (1, 2) and wall.minute % 20 == 0,
    "*/10 0 * * *": lambda wall: wall.hour == 0 and wall.minute % 10 == 0,
}


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(WILDCARD_ORACLES)), st.sampled_from(ZONES), st.data())
def test_wildcard_jobs_fire_at_every_matching_wall_minute(
    expression: str, zone: str, data: st.DataObject
) -> None:
    matches, tz = WILDCARD_ORACLES[expression], ZoneInfo(zone)
    after = data.draw(starts(zone))
    fire = compile_cron(expression, tz).next_fire(after)
    instant = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while not matches(instant.astimezone(tz)):
        instant += timedelta(minutes=1)
    assert fire.at == instant
    assert fire.note is None or " of two " in fire.note  # only a repeated hour is noted
