"""bench/peerstable.py: medians, ratios to peers and the met/missed verdicts of issue 13's targets.

Pure arithmetic over made-up figures: nothing is timed here (bench/peers.py measures).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _load() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "bench" / "peerstable.py"
    spec = importlib.util.spec_from_file_location("peerstable", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["peerstable"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


pt = _load()


def target(label_start: str) -> Any:
    return next(t for t in pt.TARGETS if t.label.startswith(label_start))


def test_medians_take_the_middle_round_of_each_metric() -> None:
    meds = pt.medians({"timeos": {"noop_rate": [900.0, 1200.0, 1000.0], "drain_ms": [5.0]}})
    assert meds == {"timeos": {"noop_rate": 1000.0, "drain_ms": 5.0}}


def test_best_peer_follows_the_metric_direction() -> None:
    meds = {
        "huey": {"noop_rate": 1500.0, "drain_ms": 1600.0},
        "aps-normal": {"noop_rate": 2000.0, "drain_ms": 300.0},
    }
    assert pt.best_peer(meds, "noop_rate") == ("aps-normal", 2000.0)  # higher is better
    assert pt.best_peer(meds, "drain_ms") == ("aps-normal", 300.0)  # lower is better
    assert pt.best_peer(meds, "late_iso_p99_ms") is None  # no peer measured it
    assert pt.best_peer({"huey": {"load_rate": 900.0}}, "load_rate") is None  # context only


@pytest.mark.parametrize(("own", "met"), [(1500.0, True), (1000.0, True), (900.0, False)])
def test_emit_target_is_a_ratio_to_huey_at_least_one(own: float, met: bool) -> None:
    meds = {"timeos": {"submit_4": own}, "huey": {"submit_4": 1000.0}}
    assert pt.evaluate(target("emit, 4 clients"), meds) == (own / 1000.0, met)


def test_batched_target_compares_with_hueys_single_enqueue() -> None:
    meds = {"timeos": {"submit_batch_4": 3100.0}, "huey": {"submit_4": 1000.0}}
    assert pt.evaluate(target("batched"), meds) == (3.1, True)
    meds["timeos"]["submit_batch_4"] = 2900.0
    assert pt.evaluate(target("batched"), meds) == (2.9, False)


@pytest.mark.parametrize(("own", "met"), [(400.0, True), (500.0, True), (600.0, False)])
def test_drain_target_is_at_most_half_of_hueys(own: float, met: bool) -> None:
    meds = {"timeos": {"drain_ms": own}, "huey": {"drain_ms": 1000.0}}
    assert pt.evaluate(target("drain of"), meds) == (own / 1000.0, met)


@pytest.mark.parametrize(("p99", "met"), [(4.0, True), (10.0, True), (10.5, False)])
def test_lateness_under_load_is_an_absolute_bound(p99: float, met: bool) -> None:
    assert pt.evaluate(target("lateness p99 under"), {"timeos": {"late_load_p99_ms": p99}}) == (
        p99,
        met,
    )


def test_idle_target_needs_no_wake_up_at_all() -> None:
    assert pt.evaluate(target("idle"), {"timeos": {"idle_wakeups": 0.0}})[1] is True
    assert pt.evaluate(target("idle"), {"timeos": {"idle_wakeups": 0.05}})[1] is False


def test_a_target_without_its_figures_is_not_measured() -> None:
    assert pt.evaluate(target("emit, 4 clients"), {"timeos": {"submit_4": 10.0}}) == (None, None)
    assert pt.evaluate(target("drain: none"), {"huey": {"drain_skipped": 0.0}}) == (None, None)


def test_target_rows_say_met_missed_or_not_measured() -> None:
    meds = {
        "timeos": {"noop_rate": 3000.0, "drain_ms": 900.0, "cli_emit_x": 2.5},
        "huey": {"noop_rate": 1000.0, "drain_ms": 1000.0},
    }
    verdicts = {row[0]: (row[1], row[2]) for row in pt.target_rows(meds)[1:]}
    assert verdicts["no-op jobs, 4 workers >= 2.0x Huey"] == ("3.00x", "met")
    assert verdicts["drain of 1,000 due at once <= 0.5x Huey"] == ("0.90x", "missed")
    assert verdicts["`timeos emit` <= 3x `python -c pass`"] == ("2.50x", "met")
    assert verdicts["idle: 0 wake-ups"] == ("-", "not measured")


def test_figure_rows_show_timeos_over_the_best_peer() -> None:
    meds = {"timeos": {"noop_rate": 1000.0}, "huey": {"noop_rate": 2000.0}}
    rows = pt.figure_rows(meds, ["timeos", "huey"])
    assert rows[0] == ["figure", "unit", "TimeOS", "Huey", "TimeOS / best peer"]
    assert rows[1] == ["no-op jobs, 4 workers", "jobs/s", "1,000", "2,000", "0.50x (Huey)"]
    assert len(rows) == 2  # metrics nobody measured are left out


def test_rounds_rotate_the_order_of_systems() -> None:
    systems = ["timeos", "huey", "aps"]
    assert [pt.rotated(systems, r) for r in range(4)] == [
        ["timeos", "huey", "aps"],
        ["huey", "aps", "timeos"],
        ["aps", "timeos", "huey"],
        ["timeos", "huey", "aps"],
    ]
    assert pt.rotated([], 2) == []
