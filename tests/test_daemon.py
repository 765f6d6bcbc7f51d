"""The composition root in-process: a Daemon built on a real database, never started."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from timeos.clock import FakeClock
from timeos.daemon.main import Daemon
from timeos.engine import Limits

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        'actions:\n  act:\n    command: ["true"]\n'
        "rules:\n  - {name: r, on_event: x, perform: act}\n"
    )
    built = Daemon(
        rule_paths=[rules],
        db_path=tmp_path / "t.db",
        socket_path=tmp_path / "t.sock",
        workers=1,
        grace=1.0,
        synchronous="NORMAL",
        clock=FakeClock(T0),
        environ={},
        limits=Limits(),
    )
    yield built
    built.store.close()
    assert built.lock_fd is not None
    os.close(built.lock_fd)


@pytest.mark.parametrize(
    ("since_tick", "status", "message"),
    [
        (timedelta(0), "healthy", "last tick 2026-01-05T12:00:00+00:00"),
        (timedelta(seconds=60), "healthy", "last tick 2026-01-05T12:00:00+00:00"),
        (timedelta(seconds=61), "degraded", "no tick for 61s (expected within 60s)"),
        (timedelta(hours=1), "degraded", "no tick for 3600s (expected within 60s)"),
    ],
    ids=["just-ticked", "at-max-sleep-plus-margin", "just-past-it", "stuck-an-hour"],
)
def test_scheduler_health_degrades_when_the_loop_stops_ticking(
    daemon: Daemon, since_tick: timedelta, status: str, message: str
) -> None:
    # The state a running loop leaves behind; then time passes without another tick.
    daemon.scheduler.loop_alive = True
    daemon.scheduler.last_tick = T0
    assert isinstance(daemon.clock, FakeClock)
    daemon.clock.advance(since_tick)
    health = daemon.service.health()
    assert health["components"]["scheduler"] == {
        "status": status,
        "message": message,
        "heartbeat_age_seconds": since_tick.total_seconds(),
    }
    assert health["status"] == status


def test_the_daemon_raises_its_soft_descriptor_limit_to_what_the_hard_limit_allows():
    # Under `ulimit -n 128` the connection cap was 8 and a burst of accepts still hit EMFILE
    # (hostile review); the hard limit is what the operator allowed, so the daemon takes it.
    import resource
    import subprocess
    import sys

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 4096))

    probe = (
        "import resource; from timeos.daemon.connections import raise_nofile_limit;"
        "print(raise_nofile_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], preexec_fn=limits, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["4096", "4096"]


@pytest.mark.parametrize(
    ("deadline", "since_tick", "status", "message"),
    [
        (None, timedelta(days=2), "healthy", "last tick 2026-01-05T12:00:00+00:00"),
        (
            T0 + timedelta(hours=6),
            timedelta(hours=6, seconds=30),
            "healthy",
            "last tick 2026-01-05T12:00:00+00:00",
        ),
        (
            T0 + timedelta(hours=6),
            timedelta(hours=6, seconds=31),
            "degraded",
            "no tick for 31s past its deadline 2026-01-05T18:00:00+00:00",
        ),
    ],
    ids=["nothing-due", "due-in-6h-on-time", "overslept"],
)
def test_an_idle_scheduler_asleep_until_its_deadline_is_healthy_until_it_oversleeps(
    daemon: Daemon, deadline: datetime | None, since_tick: timedelta, status: str, message: str
) -> None:
    # No periodic tick any more: asleep until its next deadline, however far.
    daemon.scheduler.loop_alive = True
    daemon.scheduler.last_tick = T0
    daemon.scheduler.asleep_until = deadline
    assert isinstance(daemon.clock, FakeClock)
    daemon.clock.advance(since_tick)
    health = daemon.service.health()
    assert health["components"]["scheduler"]["status"] == status
    assert health["components"]["scheduler"]["message"] == message
