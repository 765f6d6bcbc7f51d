"""cancel_on and debounce through the real CLI against a real timeosd on its fake clock."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from harness import Daemon, wait_until


def _rules(tmp: Path) -> Path:
    path = tmp / "rules.yaml"
    path.write_text(
        textwrap.dedent(
            """
            actions:
              act:
                command: ["true"]
            rules:
              - name: remind
                on_event: order_created
                offset: 1h
                perform: act
                cancel_on:
                  - {event: order_paid, match: payload.order_id}
              - name: digest
                on_event: user_active
                perform: act
                debounce: {key: payload.user_id, period: 10m, max_wait: 1h}
            """
        )
    )
    return path


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, _rules(tmp_path), fake_clock="2026-03-02T09:00:00Z").start()
    yield d
    d.stop()


def test_cancel_on_cancels_the_waiting_job_and_jobs_show_names_the_event(daemon):
    (job,) = daemon.cli_json("emit", "order_created", "--payload", '{"order_id": 7}')["jobs"]
    (other,) = daemon.cli_json("emit", "order_created", "--payload", '{"order_id": 8}')["jobs"]
    paid = daemon.cli_json("emit", "order_paid", "--payload", '{"order_id": 7}')
    assert paid["cancelled"] == [job] and paid["debounced"] == [] and paid["jobs"] == []
    shown = daemon.cli_json("jobs", "show", job)
    assert shown["status"] == "cancelled" and shown["cancelled_by"] == paid["id"]
    assert daemon.job(other)["status"] == "pending"
    rule = daemon.cli_json("rules", "show", "remind")
    assert rule["cancel_on"] == [{"event": "order_paid", "match": "payload.order_id"}]
    table = daemon.cli("jobs", "show", job)
    assert table.returncode == 0, table.stderr
    assert "cancelled_by" in table.stdout and paid["id"] in table.stdout
    # Without --json the id alone is on stdout; what the event cancelled goes to stderr.
    out = daemon.cli("emit", "order_created", "--payload", '{"order_id": 9}')
    plain = daemon.cli("emit", "order_paid", "--payload", '{"order_id": 9}')
    assert out.returncode == plain.returncode == 0
    assert plain.stdout.strip().isalnum() and "cancelled (cancel_on):" in plain.stderr


def test_a_debounced_burst_yields_one_job_that_runs_once(daemon):
    first = daemon.cli_json("emit", "user_active", "--payload", '{"user_id": "u1", "n": 1}')
    (job,) = first["jobs"]
    for n in (2, 3):
        again = daemon.cli_json(
            "emit", "user_active", "--payload", f'{{"user_id": "u1", "n": {n}}}'
        )
        assert again["jobs"] == [] and again["debounced"] == [job]
    assert [j["id"] for j in daemon.cli_json("jobs", "list", "--rule", "digest")] == [job]
    assert daemon.job(job)["payload"] == {"user_id": "u1", "n": 3}
    daemon.advance("11m")
    done = daemon.wait_job(job, "succeeded")
    assert done["attempts"] == 1
    assert wait_until(
        lambda: len(daemon.cli_json("jobs", "list", "--rule", "digest")) == 1, what="one job"
    )


def test_emit_batch_cancels_within_the_batch_and_counts_it(daemon):
    lines = (
        '{"type": "order_created", "payload": {"order_id": 1}}\n'
        '{"type": "order_paid", "payload": {"order_id": 1}}\n'
        '{"type": "user_active", "payload": {"user_id": "u"}}\n'
        '{"type": "user_active", "payload": {"user_id": "u"}}\n'
    )
    out = daemon.cli("emit-batch", "-", stdin=lines)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (
        "4 event(s) stored, 0 duplicate(s), 2 job(s) created, 1 job(s) cancelled,"
        " 1 job(s) debounced\n"
    )
    (job,) = daemon.cli_json("jobs", "list", "--rule", "remind", "--status", "cancelled")
    assert job["cancelled_by"] is not None
