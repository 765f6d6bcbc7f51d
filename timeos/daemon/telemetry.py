"""The daemon's lifecycle event bus: the service, scheduler and planner publish what happens
(`job.started`, `occurrence.missed`, ...); metrics and `timeos watch` streams subscribe.

Publishing never blocks and never raises into the caller: sinks are called in turn, each inside
its own `except`, and a watcher is a bounded queue that counts what it had to drop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from timeos.clock import Clock
from timeos.errors import UsageError

log = logging.getLogger("timeos.telemetry")

# Every kind a publisher may send; `watch.dropped` is made by a watcher for itself.
KINDS = (
    "event.emitted",
    "rule.matched",
    "job.created",
    "job.started",
    "job.succeeded",
    "job.failed",
    "job.retrying",
    "job.dead",
    "job.cancelled",
    "occurrence.fired",
    "occurrence.skipped",
    "occurrence.missed",
)
DROPPED = "watch.dropped"
WATCH_QUEUE = 1000  # events one watcher may have waiting before it starts to drop them
ID_FIELDS = ("event_id", "job_id", "rule")  # always on the wire, null when not involved


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """One thing that happened in the daemon: its kind, when (the daemon's clock), and the ids."""

    kind: str
    at: datetime
    fields: Mapping[str, Any]

    @property
    def rule(self) -> str | None:
        value = self.fields.get("rule")
        return value if isinstance(value, str) else None

    def to_json(self) -> dict[str, Any]:
        """The wire form: kind, at, the three ids (null when not involved), then the rest."""
        body: dict[str, Any] = {"kind": self.kind, "at": self.at.isoformat()}
        for name in ID_FIELDS:
            body[name] = self.fields.get(name)
        for name, value in self.fields.items():
            if name not in body and value is not None:
                body[name] = value
        return body


class Publish(Protocol):
    def __call__(self, kind: str, /, **fields: Any) -> None:
        """Tell the subscribers that `kind` happened now, with these ids and facts."""
        ...


def no_publish(kind: str, /, **fields: Any) -> None:
    """A publisher with nobody listening (tests and tools that build parts of the daemon)."""


Sink = Callable[[Lifecycle], None]


def kind_filter(value: str | None) -> Callable[[str], bool]:
    """What `--type` matches: a kind (`job.dead`), or a prefix ending in `.` (`job.`)."""
    if not value:
        return lambda kind: True
    if value.endswith("."):
        if not any(k.startswith(value) for k in KINDS):
            raise UsageError(f"type {value!r} is the prefix of no lifecycle kind; {_known()}")
        return lambda kind: kind.startswith(value)
    if value not in KINDS:
        raise UsageError(f"type {value!r} is not a lifecycle kind; {_known()}")
    return lambda kind: kind == value


def _known() -> str:
    prefixes = sorted({k.split(".")[0] + "." for k in KINDS})
    return f"use one of {', '.join(KINDS)} or a prefix: {', '.join(prefixes)}"


class _Dropped:
    """Stands in a watcher's queue where events were dropped, counting them."""

    __slots__ = ("at", "count")

    def __init__(self, at: datetime) -> None:
        self.at = at
        self.count = 0


class Watcher:
    """One subscriber's bounded queue of lifecycle events, filtered by rule and kind.

    When `capacity` events are waiting, later ones are counted instead of queued; the reader
    meets one `watch.dropped` event with the count exactly where they went missing.
    """

    def __init__(
        self,
        *,
        capacity: int = WATCH_QUEUE,
        rule: str | None = None,
        kinds: Callable[[str], bool] = lambda kind: True,
    ) -> None:
        self.capacity = capacity
        self.rule = rule
        self.kinds = kinds
        self.dropped = 0
        self.closed = False
        self._items: deque[Lifecycle | _Dropped] = deque()
        self._queued = 0
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._on_close: list[Callable[[], None]] = []

    def offer(self, event: Lifecycle) -> None:
        """Queue `event` if it passes the filters; drop and count it when the queue is full."""
        if self.closed or not self.kinds(event.kind):
            return
        if self.rule is not None and event.rule != self.rule:
            return
        if self._queued >= self.capacity:
            tail = self._items[-1] if self._items else None
            if not isinstance(tail, _Dropped):
                tail = _Dropped(event.at)
                self._items.append(tail)
            tail.count += 1
            self.dropped += 1
            return  # the reader is behind, not waiting: no need to wake it
        self._items.append(event)
        self._queued += 1
        self._wake()

    async def next(self) -> Lifecycle | None:
        """The next event (or the count of those dropped); None once closed."""
        while not self._items:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        if self.closed:
            return None  # shutting down: what is still queued is not worth holding it up
        item = self._items.popleft()
        if isinstance(item, _Dropped):
            return Lifecycle(DROPPED, item.at, {"count": item.count})
        self._queued -= 1
        return item

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the watcher is closed (the stream ends its response)."""
        self._on_close.append(callback)

    def close(self) -> None:
        """End the stream: `next()` returns None from now on."""
        if self.closed:
            return
        self.closed = True
        self._wake()
        for callback in self._on_close:
            callback()

    def _wake(self) -> None:
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is self._loop:
            self._ready.set()
        else:  # published from a worker thread: asyncio.Event belongs to its loop
            self._loop.call_soon_threadsafe(self._ready.set)


class EventBus:
    """Fans lifecycle events out to sinks (metrics) and watchers (streams); one per daemon."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sinks: list[Sink] = []
        self.watchers: set[Watcher] = set()
        self.closed = False
        self.published = 0
        self.sink_errors = 0

    def publish(self, kind: str, /, **fields: Any) -> None:
        """Hand `kind` to every subscriber now; never blocks and never raises."""
        try:
            event = Lifecycle(kind, self.clock.now(), fields)
            self.published += 1
        except Exception:  # a clock that fails: the caller's work matters more than telemetry
            self.sink_errors += 1
            return
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:
                self.sink_errors += 1
                if self.sink_errors <= 3:  # a broken sink would otherwise log on every event
                    log.exception("telemetry sink %r failed on %s", sink, kind)
        for watcher in tuple(self.watchers):
            try:
                watcher.offer(event)
            except Exception:
                self.sink_errors += 1
                self.watchers.discard(watcher)
                log.exception("watcher dropped after it failed on %s", kind)

    def subscribe(self, sink: Sink) -> None:
        """Call `sink` with every event, on the publisher's thread (keep it cheap)."""
        self.sinks.append(sink)

    def watch(
        self, *, rule: str | None = None, kind: str | None = None, capacity: int = WATCH_QUEUE
    ) -> Watcher:
        """A new watcher of events of `rule` and `kind` (see kind_filter); UsageError if bad."""
        watcher = Watcher(capacity=capacity, rule=rule or None, kinds=kind_filter(kind))
        if self.closed:
            watcher.close()  # shutting down: the stream ends at once
        else:
            self.watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        """Forget `watcher` (its stream ended)."""
        self.watchers.discard(watcher)
        watcher.close()

    def close(self) -> None:
        """End every watcher's stream now and refuse new ones (the daemon is stopping)."""
        self.closed = True
        for watcher in tuple(self.watchers):
            self.unwatch(watcher)
