"""Prometheus metrics of one daemon, in a registry of its own: counters and histograms fed from
the lifecycle bus, gauges read from the store and the planner when scraped (`GET /metrics`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from timeos.daemon.telemetry import Lifecycle

if TYPE_CHECKING:
    from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("timeos.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_EVENT_TYPES = 500  # distinct `type` labels; clients choose event types, series cost memory
OTHER_TYPE = "_other"
# Lateness: from a job's perform_at to its start. Duration: one attempt, start to end.
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 21600, 86400)
DURATION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
FINISHED = {"job.succeeded": "succeeded", "job.dead": "dead", "job.cancelled": "cancelled"}
COUNTED = frozenset({"event.emitted", "job.started", "job.succeeded", "job.failed", *FINISHED})

JobCounts = Callable[[], Mapping[str, int]]
NextFires = Callable[[], Mapping[str, datetime | None]]


class Metrics:
    """The daemon's metrics; `observe` is a bus sink, `exposition` renders a scrape.

    prometheus_client (~30 modules, ~1.5 MB) is imported at the first lifecycle event or scrape,
    whichever comes first: until then every labelled series is empty and the gauges are read at
    scrape time, so a daemon at rest that nobody scrapes never loads it.
    """

    def __init__(
        self,
        *,
        job_counts: JobCounts,
        next_fires: NextFires,
        watchers: Callable[[], int] = lambda: 0,
    ) -> None:
        self._gauges = (job_counts, next_fires, watchers)
        self._types: set[str] = set()
        self._live: _Live | None = None
        self._children: dict[tuple[int | str, ...], Any] = {}
        # Publishers may be worker threads (an emit-batch): one of them builds the objects.
        self._building = threading.Lock()

    def _metrics(self) -> _Live:
        with self._building:
            if self._live is None:
                self._live = _Live(*self._gauges)
            return self._live

    def observe(self, event: Lifecycle) -> None:
        """Count one lifecycle event (a bus sink: cheap, on the publisher's thread)."""
        kind, fields = event.kind, event.fields
        if kind not in COUNTED:
            return  # e.g. a reload or a watcher: nothing to count, nothing to import
        live = self._live or self._metrics()
        if kind == "event.emitted":
            live.events.labels(type=self._type_label(str(fields.get("type")))).inc()
        elif kind == "job.started":
            lateness = fields.get("lateness_ms")
            if isinstance(lateness, int | float):
                self._child(live.lateness, event.rule or "").observe(max(0.0, lateness / 1000))
        elif kind in ("job.succeeded", "job.failed"):
            duration = fields.get("duration_ms")
            if isinstance(duration, int | float):
                self._child(live.duration, event.rule or "").observe(max(0.0, duration / 1000))
        if kind in FINISHED:
            self._child(live.finished, event.rule or "", FINISHED[kind]).inc()

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric now."""
        from prometheus_client import generate_latest

        return generate_latest(self._metrics().registry)

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, kept: labels() validates and locks on every call, and a
        no-op job observes three of them (the label sets are the rules', so the cache is too)."""
        key: tuple[int | str, ...] = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _type_label(self, event_type: str) -> str:
        if event_type in self._types:
            return event_type
        if len(self._types) >= MAX_EVENT_TYPES:
            return OTHER_TYPE
        self._types.add(event_type)
        return event_type


class _Live:
    """The prometheus_client objects: one registry, its counters and histograms, the gauges."""

    def __init__(
        self, job_counts: JobCounts, next_fires: NextFires, watchers: Callable[[], int]
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.events = Counter(
            "timeos_events", "Events stored, by event type", ["type"], registry=self.registry
        )
        self.finished = Counter(
            "timeos_jobs_finished",
            "Jobs that reached a final status, by rule and outcome (succeeded, dead, cancelled)",
            ["rule", "outcome"],
            registry=self.registry,
        )
        self.lateness = Histogram(
            "timeos_job_lateness_seconds",
            "How late an attempt started after the job's perform_at, by rule",
            ["rule"],
            buckets=LATENESS_BUCKETS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "timeos_job_duration_seconds",
            "How long an attempt ran, by rule",
            ["rule"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Gauges(job_counts, next_fires, watchers))


class _Gauges:
    """What is true at scrape time: jobs per status, each rule's next fire, that we are up.

    A prometheus_client Collector by its `collect` method (the registry asks for nothing else).
    """

    def __init__(
        self, job_counts: JobCounts, next_fires: NextFires, watchers: Callable[[], int]
    ) -> None:
        self.job_counts = job_counts
        self.next_fires = next_fires
        self.watchers = watchers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("timeos_up", "1 while timeosd is serving", value=1)
        yield GaugeMetricFamily(
            "timeos_watchers", "Open `timeos watch` streams", value=self.watchers()
        )
        jobs = GaugeMetricFamily("timeos_jobs", "Jobs in each status", labels=["status"])
        try:
            counts = self.job_counts()
        except Exception as exc:  # a locked database must not fail the whole scrape
            log.warning("metrics: job counts unavailable: %s", exc)
            counts = {}
        for status, count in sorted(counts.items()):
            jobs.add_metric([status], count)
        yield jobs
        fires = GaugeMetricFamily(
            "timeos_rule_next_fire_timestamp_seconds",
            "When each enabled time-based rule fires next (Unix time)",
            labels=["rule"],
        )
        for rule, when in sorted(self.next_fires().items()):
            if when is not None:
                fires.add_metric([rule], when.timestamp())
        yield fires
