"""bench/pg_daemons.py: how its load is spread over the daemons (nothing is timed here).

The lateness probes go to the daemons in turn and emitting client i talks to daemon i mod N;
a mistake would measure one daemon while claiming to measure several.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def pg_daemons(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    pytest.importorskip("psycopg")
    monkeypatch.syspath_prepend(str(BENCH))  # the benches import benchkit, lateness, ...
    for name in ("pg_daemons", "benchkit", "lateness", "emit_throughput"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import pg_daemons

    return pg_daemons


class _Recorder:
    def __init__(self, name: str, log: list[tuple[str, str]]) -> None:
        self.name = name
        self.log = log
        self.socket_path = Path(name)

    def call(self, method: str, path: str, body: Any = None, query: Any = None) -> str:
        self.log.append((self.name, path))
        return self.name


def test_round_robin_sends_each_request_to_the_next_daemon(pg_daemons: ModuleType) -> None:
    log: list[tuple[str, str]] = []
    clients = [_Recorder(n, log) for n in ("a", "b", "c")]
    rr = pg_daemons.RoundRobin(clients)
    answers = [rr.call("POST", f"/v1/events/{i}") for i in range(6)]
    assert sorted(answers) == ["a", "a", "b", "b", "c", "c"]
    assert [answers[i] != answers[i + 1] for i in range(5)] == [True] * 5


def test_spread_puts_client_i_on_daemon_i_mod_n(
    pg_daemons: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[Path, int, int]] = []
    monkeypatch.setattr(
        pg_daemons.emit_throughput, "emit_many", lambda s, c, i: sent.append((s, c, i))
    )
    spread = pg_daemons.Spread([Path("d0"), Path("d1"), Path("d2")])
    for client in range(pg_daemons.CLIENTS):
        spread(Path("ignored"), 5, client)
    assert [s.name for s, _, _ in sent] == ["d0", "d1", "d2", "d0", "d1", "d2"]
    assert {c for _, c, _ in sent} == {5}


def test_each_daemon_count_gets_the_same_number_of_clients(pg_daemons: ModuleType) -> None:
    assert all(pg_daemons.CLIENTS % n == 0 for n in (1, 2, 3))
