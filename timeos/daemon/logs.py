"""The daemon's log set-up: stderr, one line per record, the same line at most once per interval.

Under a flood (asyncio logs a traceback for every failed accept()) the log must not grow without
bound: 1,100 idle connections once produced 142 MB of log in 70 s.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

DEFAULT_REPEAT_INTERVAL = 10.0
DEFAULT_REPEAT_BURST = 3
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RepeatFilter(logging.Filter):
    """Let the same message through at most `burst` times per `interval` seconds, counting the rest.

    A message is its logger, level and formatted text: lines that differ (another job, another
    file) all get through. The small burst keeps what a person repeats (two reloads in a row) and
    still stops a flood. The first one shown after a held-back run carries "(repeated K times)".
    """

    def __init__(
        self,
        interval: float = DEFAULT_REPEAT_INTERVAL,
        burst: int = DEFAULT_REPEAT_BURST,
        monotonic: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.burst = burst
        self.monotonic = monotonic
        self.max_keys = max_keys
        # message -> [start of its window, shown in the window, held back since last shown]
        self._seen: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # bad arguments: the handler reports that, not us
            return True
        key = (record.name, record.levelno, text)
        now = self.monotonic()
        seen = self._seen.get(key)
        if seen is None or now - seen[0] >= self.interval:
            if seen is None and len(self._seen) >= self.max_keys:
                self._seen.clear()  # a bound on memory: forgetting only lets a line through
            held = int(seen[2]) if seen else 0
            self._seen[key] = [now, 1, 0]
            if held:
                record.msg, record.args = f"{text} (repeated {held} times)", None
            return True
        if seen[1] < self.burst:
            seen[1] += 1
            return True
        seen[2] += 1
        return False


def configure(level: str, interval: float = DEFAULT_REPEAT_INTERVAL) -> None:
    """Log to stderr at `level`, with repeats of a message held back for `interval` seconds."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RepeatFilter(interval))
    logging.basicConfig(level=level.upper(), handlers=[handler])
