"""Small bar charts as data for an inline SVG (no chart library): bars scaled to a box."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 240
HEIGHT = 48


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    """What the template draws: bars, the peak value, a text summary for screen readers."""

    title: str
    bars: tuple[Bar, ...]
    peak: int
    total: int
    unit: str
    summary: str
    width: int = WIDTH
    height: int = HEIGHT


def bar_chart(title: str, values: Sequence[int], labels: Sequence[str], unit: str) -> Chart:
    """Scale `values` (oldest first) to bars filling WIDTH x HEIGHT."""
    peak = max(values, default=0)
    step = WIDTH / max(1, len(values))
    bars = []
    for n, (value, label) in enumerate(zip(values, labels, strict=True)):
        h = 0.0 if peak == 0 else max(1.0, HEIGHT * value / peak) if value else 0.0
        bars.append(
            Bar(
                round(n * step, 2),
                round(HEIGHT - h, 2),
                round(step * 0.8, 2),
                round(h, 2),
                f"{label}: {value} {unit}",
            )
        )
    total = sum(values)
    summary = f"{title}: {total} {unit} in the last hour, at most {peak} in one minute"
    return Chart(title, tuple(bars), peak, total, unit, summary)
