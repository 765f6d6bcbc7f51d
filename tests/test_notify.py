"""systemd notification (Type=notify): READY, RELOADING, STATUS, WATCHDOG, STOPPING, in order."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
from harness import Daemon, wait_until

from timeos.actions import ActionRunner
from timeos.clock import FakeClock
from timeos.daemon.notify import Notifier
from timeos.daemon.scheduler import Scheduler
from timeos.model import RuleSet

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

RULES = """\
actions:
  hello: {command: ["true"]}
rules:
  - {name: greet, on_event: signup, offset: 1h, perform: hello}
"""


class Listener:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0)
        self.messages: list[dict[str, str]] = []

    def drain(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append(fields)

    def states(self) -> list[str]:
        """The state changes received so far, WATCHDOG pings included."""
        keys = ("READY", "RELOADING", "STOPPING", "WATCHDOG")
        return [k for m in self.drain() for k in keys if m.get(k) == "1"]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path):
    found = Listener(str(tmp_path / "notify.sock"))
    yield found
    found.close()


def test_a_real_timeosd_reports_ready_reloading_ready_watchdog_stopping_in_order(
    tmp_path, listener
):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    daemon = Daemon(
        tmp_path,
        rules,
        # systemd's WatchdogSec=1s: timeosd must ping at least every 0.5 s.
        extra_env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "1000000"},
    ).start()
    try:
        wait_until(lambda: "READY" in listener.states(), what="READY=1")
        first_ready = next(m for m in listener.messages if m.get("READY") == "1")
        assert first_ready["STATUS"] == "1 rule(s), 0 job(s) waiting, 0 running"

        daemon.cli("emit", "signup")
        before = time.monotonic_ns() // 1000
        assert daemon.cli("reload").returncode == 0
        after = time.monotonic_ns() // 1000
        wait_until(lambda: listener.states().count("READY") == 2, what="READY after the reload")
        reloading = next(m for m in listener.messages if m.get("RELOADING") == "1")
        # CLOCK_MONOTONIC in microseconds (the same clock in every process), read at the reload.
        assert before <= int(reloading["MONOTONIC_USEC"]) <= after
        again = [m for m in listener.messages if m.get("READY") == "1"][1]
        assert again["STATUS"] == "1 rule(s), 1 job(s) waiting, 0 running"
        # The watchdog keeps coming from the scheduler loop while the daemon idles.
        seen = len(listener.drain())
        wait_until(
            lambda: any(m.get("WATCHDOG") == "1" for m in listener.drain()[seen:]),
            what="a watchdog ping after the reload",
        )
    finally:
        assert daemon.stop() == 0
    states = listener.states()
    assert [s for s in states if s != "WATCHDOG"] == ["READY", "RELOADING", "READY", "STOPPING"]
    # A ping after the second READY and before STOPPING.
    second_ready = len(states) - 1 - states[::-1].index("READY")
    assert "WATCHDOG" in states[second_ready : states.index("STOPPING")]


def test_a_rejected_reload_is_still_followed_by_ready_with_the_old_rules(tmp_path, listener):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    daemon = Daemon(
        tmp_path, rules, extra_env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    ).start()
    try:
        rules.write_text(RULES.replace("perform: hello", "perform: nope"))
        result = daemon.cli("reload")
        assert result.returncode == 1 and "nope" in result.stderr
        wait_until(lambda: listener.states().count("READY") == 2, what="READY after the reload")
        last = [m for m in listener.messages if m.get("READY") == "1"][-1]
        assert last["STATUS"].startswith("reload rejected, old rules kept; 1 rule(s)")
    finally:
        daemon.stop()


def test_no_notify_socket_means_no_messages_and_no_watchdog():
    notifier = Notifier.from_environ({}, os.getpid())
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert notifier.send("READY=1") is False


def test_notify_settings_are_taken_out_of_the_environment_so_children_never_notify():
    environ = {"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}
    notifier = Notifier.from_environ(environ, 42)
    assert environ == {}
    assert notifier.address == "/run/n"
    assert notifier.watchdog_interval == 15.0  # half of what systemd gave


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "2000000"}, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7"}, None),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
    ids=["no-pid", "another-pid", "bad-pid", "zero", "malformed"],
)
def test_the_watchdog_applies_only_to_the_pid_it_names(environ, interval):
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "/n", **environ}, 42)
    assert notifier.watchdog_interval == interval


def test_an_abstract_notify_socket_is_reached_by_its_at_sign_name():
    name = f"timeos-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        notifier = Notifier(f"@{name}", watchdog_usec=10_000_000)
        notifier.heartbeat("3 rule(s)")
        notifier.close()
        assert server.recv(4096) == b"WATCHDOG=1\nSTATUS=3 rule(s)"


def test_an_unreachable_notify_socket_is_reported_once_and_never_raises(tmp_path, caplog):
    notifier = Notifier(str(tmp_path / "gone.sock"))
    assert notifier.send("READY=1") is False
    assert notifier.send("STOPPING=1") is False
    assert len([r for r in caplog.records if "cannot notify" in r.message]) == 1


def test_the_scheduler_loop_itself_beats_at_least_every_interval_and_no_faster(backend, tmp_path):
    store = backend.open(tmp_path / "t.db")
    clock = FakeClock(T0)
    beats: list[datetime] = []
    runner = ActionRunner(environ={}, emitter=None)  # type: ignore[arg-type]
    scheduler = Scheduler(
        store=store,
        clock=clock,
        runner=runner,
        rules=lambda: RuleSet((), {}),
        heartbeat=lambda: beats.append(clock.now()),
        heartbeat_every=15.0,
    )

    async def until(predicate) -> None:
        for _ in range(500):
            if predicate():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("timed out")

    async def go() -> None:
        task = asyncio.create_task(scheduler.run())
        await until(lambda: beats == [T0])
        # Pokes turn the loop, but a beat per turn would flood systemd under load.
        scheduler.poke()
        clock.advance(timedelta(seconds=5))
        await until(lambda: scheduler.last_tick == T0 + timedelta(seconds=5))
        assert beats == [T0]
        # Nothing is due, yet the loop wakes by itself within the interval to beat.
        clock.advance(timedelta(seconds=10))
        await until(lambda: len(beats) == 2)
        assert beats[1] == T0 + timedelta(seconds=15)
        scheduler.stop()
        await task

    asyncio.run(go())
    store.close()


def test_a_stop_signal_sends_stopping_once(tmp_path, listener):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    daemon = Daemon(
        tmp_path, rules, extra_env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    ).start()
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.proc.wait(15) == 0
    assert listener.states().count("STOPPING") == 1
