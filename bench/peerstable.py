"""The table bench/peers.py prints and writes: medians over rounds, ratios to peers, targets.

Pure functions over plain dicts (system -> metric -> value per round), so tests can check that
a ratio and its met/missed verdict come out right without running anything.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SYSTEMS = ("timeos", "huey", "huey-normal", "aps", "aps-normal")
PEERS = SYSTEMS[1:]
LABELS = {
    "timeos": "TimeOS",
    "huey": "Huey",
    "huey-normal": "Huey NORMAL",
    "aps": "APScheduler",
    "aps-normal": "APS NORMAL",
}

Rounds = Mapping[str, Mapping[str, Sequence[float]]]  # system -> metric -> one value per round
Medians = Mapping[str, Mapping[str, float]]  # system -> metric -> median


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    label: str
    unit: str
    better: str = ""  # "higher", "lower", or "" (a context figure: no ratio)


METRICS = (
    Metric("late_iso_p50_ms", "lateness isolated p50", "ms", "lower"),
    Metric("late_iso_p99_ms", "lateness isolated p99", "ms", "lower"),
    Metric("late_load_p50_ms", "lateness under load p50", "ms", "lower"),
    Metric("late_load_p99_ms", "lateness under load p99", "ms", "lower"),
    Metric("load_rate", "background load achieved", "jobs/s"),
    Metric("drain_ms", "1,000 due at once: drain", "ms", "lower"),
    Metric("drain_skipped", "1,000 due at once: skipped", "jobs", "lower"),
    Metric("noop_rate", "no-op jobs, 4 workers", "jobs/s", "higher"),
    Metric("submit_1", "emit/enqueue, 1 client", "/s", "higher"),
    Metric("submit_4", "emit/enqueue, 4 clients", "/s", "higher"),
    Metric("submit_batch_1", "emit batched, 1 client", "/s", "higher"),
    Metric("submit_batch_4", "emit batched, 4 clients", "/s", "higher"),
    Metric("idle_cpu_pct", "idle CPU", "% core", "lower"),
    Metric("idle_wakeups", "idle wake-ups", "/s", "lower"),
    Metric("rss_0_mb", "RSS, 0 waiting", "MB", "lower"),
    Metric("rss_mid_mb", "RSS, 100,000 waiting", "MB", "lower"),
    Metric("rss_big_mb", "RSS, 1,000,000 waiting", "MB", "lower"),
    Metric("rss_max_mb", "RSS, largest of the three", "MB", "lower"),
    Metric("python_pass_ms", "`python -c pass`", "ms"),
    Metric("cli_emit_ms", "`timeos emit` process", "ms"),
    Metric("cli_next_ms", "`timeos next` process", "ms"),
    Metric("cli_emit_x", "`timeos emit` / `python -c pass`", "x"),
    Metric("cli_next_x", "`timeos next` / `python -c pass`", "x"),
)
METRIC = {m.key: m for m in METRICS}


@dataclass(frozen=True, slots=True)
class Target:
    """TimeOS's `metric` against `bound` (times `peer`'s `peer_metric` when `peer` is set)."""

    label: str
    metric: str
    op: str  # ">=" or "<="
    bound: float
    peer: str = ""
    peer_metric: str = ""


TARGETS = (
    Target("emit, 4 clients >= 1.0x Huey enqueue, 4 clients", "submit_4", ">=", 1.0, "huey"),
    Target(
        "batched emit, 4 clients >= 3x Huey enqueue, 4 clients",
        "submit_batch_4",
        ">=",
        3.0,
        "huey",
        "submit_4",
    ),
    Target("no-op jobs, 4 workers >= 2.0x Huey", "noop_rate", ">=", 2.0, "huey"),
    Target("drain of 1,000 due at once <= 0.5x Huey", "drain_ms", "<=", 0.5, "huey"),
    Target("drain: none skipped", "drain_skipped", "<=", 0.0),
    Target("lateness p99 isolated <= 1.0x APScheduler", "late_iso_p99_ms", "<=", 1.0, "aps"),
    Target("lateness p99 under load <= 10 ms", "late_load_p99_ms", "<=", 10.0),
    Target("idle: 0 wake-ups", "idle_wakeups", "<=", 0.0),
    Target("RSS <= 40 MB, 0 to 1,000,000 waiting", "rss_max_mb", "<=", 40.0),
    Target("`timeos emit` <= 3x `python -c pass`", "cli_emit_x", "<=", 3.0),
    Target("`timeos next` <= 6x `python -c pass`", "cli_next_x", "<=", 6.0),
)


def rotated(items: Sequence[str], by: int) -> list[str]:
    """`items` started at position `by` (mod len): each round runs the systems in a new order."""
    if not items:
        return []
    by %= len(items)
    return [*items[by:], *items[:by]]


def medians(rounds: Rounds) -> dict[str, dict[str, float]]:
    """The median of each metric over the rounds that measured it."""
    return {
        system: {key: statistics.median(values) for key, values in metrics.items() if values}
        for system, metrics in rounds.items()
    }


def best_peer(meds: Medians, key: str) -> tuple[str, float] | None:
    """The peer with the best median for `key` (by the metric's direction), if any has one."""
    metric = METRIC[key]
    found = [(meds[p][key], p) for p in PEERS if key in meds.get(p, {})]
    if not metric.better or not found:
        return None
    value, peer = max(found) if metric.better == "higher" else min(found)
    return peer, value


def ratio(value: float, other: float) -> float | None:
    """value / other; None when other is 0 (a ratio to nothing says nothing)."""
    return None if other == 0 else value / other


def evaluate(target: Target, meds: Medians) -> tuple[float | None, bool | None]:
    """(the figure the target is judged on, met?); (None, None) when something was not measured."""
    own = meds.get("timeos", {}).get(target.metric)
    if own is None:
        return None, None
    figure = own
    if target.peer:
        other = meds.get(target.peer, {}).get(target.peer_metric or target.metric)
        if other is None:
            return None, None
        got = ratio(own, other)
        if got is None:  # the peer scored 0: a ratio says nothing; met only by a 0 of our own
            return None, own <= 0 if target.op == "<=" else True
        figure = got
    met = figure >= target.bound if target.op == ">=" else figure <= target.bound
    return figure, met


def fmt(value: float | None, unit: str = "") -> str:
    """A figure for the table: thousands separators for big ones, 3 significant digits below."""
    if value is None:
        return "-"
    if math.isinf(value):
        return "never" if unit != "x" else "inf"
    if unit == "x":
        return f"{value:.2f}x"
    magnitude = abs(value)
    if magnitude >= 100 or value == int(value):
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def figure_rows(
    meds: Medians, systems: Sequence[str], relabel: Mapping[str, str] | None = None
) -> list[list[str]]:
    """Header plus one row per measured metric: each system's median and TimeOS / best peer.

    `relabel` renames rows whose sizes changed (a --quick run's RSS readings).
    """
    relabel = relabel or {}
    rows = [["figure", "unit", *(LABELS[s] for s in systems), "TimeOS / best peer"]]
    for metric in METRICS:
        if not any(metric.key in meds.get(s, {}) for s in systems):
            continue
        cells = [fmt(meds.get(s, {}).get(metric.key), metric.unit) for s in systems]
        best = best_peer(meds, metric.key)
        own = meds.get("timeos", {}).get(metric.key)
        versus = "-"
        if best is not None and own is not None:
            peer, value = best
            got = ratio(own, value)
            versus = f"{fmt(got, 'x')} ({LABELS[peer]})" if got is not None else "-"
        rows.append([relabel.get(metric.key, metric.label), metric.unit, *cells, versus])
    return rows


def target_rows(meds: Medians) -> list[list[str]]:
    """Header plus one row per target: the figure it is judged on and met / missed."""
    rows = [["target", "TimeOS", "verdict"]]
    for target in TARGETS:
        figure, met = evaluate(target, meds)
        unit = "x" if target.peer else METRIC[target.metric].unit
        shown = fmt(figure, unit) + ("" if target.peer or unit == "x" else f" {unit}")
        verdict = "not measured" if met is None else ("met" if met else "missed")
        rows.append([target.label, shown if figure is not None else "-", verdict])
    return rows


def render_text(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def render_markdown(rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(rows[0]), line(["---"] * len(rows[0])), *map(line, rows[1:])])
