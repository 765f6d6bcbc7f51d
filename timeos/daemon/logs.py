"""The daemon's log set-up: stderr, one line per record, the same line at most once per interval.

A line is `time level logger: message key=value...` (or one JSON object), its time in UTC with
the offset written, with journald priority prefixes when stderr is the journal, and every known
secret (a ${VAR} the rules expanded) replaced by `***`. Under a flood (asyncio logs a traceback
for every failed accept()) the log must not grow without bound: 1,100 idle connections once
produced 142 MB of log in 70 s.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote, quote_plus

DEFAULT_REPEAT_INTERVAL = 10.0
DEFAULT_REPEAT_BURST = 3
FORMATS = ("text", "json")
MIN_SECRET = 4  # shorter values would blank out ordinary words; no real token is this short
# syslog priorities, as journald reads them from a `<N>` line prefix
PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}
_BARE = re.compile(r"[^\s=\"\\]+")


def fields(**values: Any) -> dict[str, Any]:
    """Build the `extra=` of a line with fields: `log.info("job finished", extra=fields(...))`."""
    return {"fields": values}


def journal_stream(environ: Mapping[str, str], stream: IO[str]) -> bool:
    """Tell whether `stream` is the journal: systemd puts its device:inode in $JOURNAL_STREAM."""
    dev, _, ino = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        found = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # a stream without a descriptor (tests)
        return False
    return (found.st_dev, found.st_ino) == (int(dev), int(ino))


class Redactor:
    """Replace every known secret with `***`; `source` says where the secrets are (the rules)."""

    def __init__(self, source: Callable[[], Iterable[str]] = tuple) -> None:
        self.source = source
        # The forms of the secrets last seen: built again only when the secrets change (a
        # reload), not for every value of every line (28 µs each with two secrets).
        self._seen: frozenset[str] = frozenset()
        self._forms: tuple[str, ...] = ()

    def __call__(self, text: str) -> str:
        secrets = self.source()
        if secrets is not self._seen and secrets != self._seen:
            self._seen = frozenset(secrets)
            self._forms = _forms(self._seen)
        for secret in self._forms:
            if secret in text:
                text = text.replace(secret, "***")
        return text


def _forms(secrets: frozenset[str]) -> tuple[str, ...]:
    """Each secret also as a URL would carry it (httpx logs request URLs: `?token=a%20b`),
    longest first, so a secret that contains another is hidden whole."""
    forms = {
        form
        for secret in secrets
        if len(secret) >= MIN_SECRET
        for form in (
            secret,
            quote(secret, safe=""),
            quote(secret, safe="/:@"),
            quote_plus(secret),
        )
    }
    return tuple(sorted(forms, key=len, reverse=True))


class LineFormatter(logging.Formatter):
    """One record as one line (`text`) or one JSON object (`json`), with its fields."""

    def __init__(
        self, style: str = "text", *, journal: bool = False, redact: Redactor | None = None
    ) -> None:
        super().__init__()
        self.style = style
        self.journal = journal
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        message = self.redact(record.getMessage())
        values = {
            key: self.redact(value) if isinstance(value, str) else value
            for key, value in getattr(record, "fields", {}).items()
            if value is not None
        }
        trace = ""
        if record.exc_info:
            trace = self.formatException(record.exc_info)
        if record.stack_info:
            trace = f"{trace}\n{self.formatStack(record.stack_info)}".lstrip("\n")
        trace = self.redact(trace)
        if self.style == "json":
            body: dict[str, Any] = {
                "ts": when,
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": message,
                **values,
            }
            if trace:
                body["exc"] = trace
            line = json.dumps(body, ensure_ascii=False, default=str)
        else:
            pairs = "".join(f" {key}={_logfmt(value)}" for key, value in values.items())
            line = f"{when} {record.levelname} {record.name}: {message}{pairs}"
            if trace:
                line = f"{line}\n{trace}"
        if self.journal:
            # journald takes each line as an entry of its own: each gets the priority.
            prefix = f"<{PRIORITY.get(record.levelno, 6)}>"
            line = "\n".join(prefix + part for part in line.split("\n"))
        return line


def _logfmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


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
        # The fields belong to the line: the same words about another job are another line.
        extra = getattr(record, "fields", None)
        key = (record.name, record.levelno, f"{text}\0{extra!r}" if extra else text)
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


def configure(
    level: str,
    style: str = "text",
    *,
    redact: Redactor | None = None,
    environ: Mapping[str, str] = os.environ,
    interval: float = DEFAULT_REPEAT_INTERVAL,
) -> None:
    """Log to stderr at `level` in `style`, with repeats of a message held back for `interval` s."""
    handler = logging.StreamHandler(sys.stderr)
    journal = journal_stream(environ, sys.stderr)
    handler.setFormatter(LineFormatter(style, journal=journal, redact=redact))
    handler.addFilter(RepeatFilter(interval))
    logging.basicConfig(level=level.upper(), handlers=[handler])
