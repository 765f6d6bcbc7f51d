"""Chains through a real timeosd and the real `timeos` CLI: a perform list runs in order, and a
dead parent's child is cancelled, then revived by `timeos dlq retry`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from harness import Daemon


def _rules(tmp: Path) -> Path:
    path = tmp / "rules.yaml"
    path.write_text(
        textwrap.dedent(
            """
            actions:
              charge:
                command: ["sh", "-c", "echo charge >> steps.log"]
              receipt:
                command: ["sh", "-c", "echo receipt >> steps.log"]
              flaky:
                command: ["sh", "-c", "test -f card.ok"]
                retry: {max_attempts: 1}
            rules:
              - name: pay
                on_event: paid
                perform: [charge, receipt]
              - name: try
                on_event: tried
                perform: flaky
              - name: thank
                on_event: tried
                after: try
                perform: receipt
            """
        )
    )
    return path


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, _rules(tmp_path), fake_clock="2026-03-02T09:05:00Z").start()
    yield d
    d.stop()


def test_a_perform_list_runs_its_actions_in_order_one_after_the_other(daemon, tmp_path):
    charge, receipt = daemon.cli_json("emit", "paid")["jobs"]
    assert daemon.job(receipt)["depends_on"] == [charge]
    daemon.wait_job(receipt, "succeeded")
    assert daemon.job(charge)["status"] == "succeeded"
    assert (tmp_path / "steps.log").read_text() == "charge\nreceipt\n"
    shown = daemon.cli_json("jobs", "show", receipt)
    assert [(p["id"], p["status"]) for p in shown["parents"]] == [(charge, "succeeded")]
    assert shown["children"] == []
    table = daemon.cli("jobs", "show", charge)
    assert table.returncode == 0, table.stderr
    # Into a pipe the Chain table is TSV: one row per parent or child.
    assert f"child\t{receipt}\tpay\treceipt\tsucceeded\n" in table.stdout, table.stdout


def test_a_dead_parent_cancels_its_child_and_dlq_retry_revives_it(daemon, tmp_path):
    parent, child = daemon.cli_json("emit", "tried")["jobs"]
    assert daemon.job(child)["status"] in ("blocked", "cancelled")
    daemon.wait_job(parent, "dead")
    cancelled = daemon.wait_job(child, "cancelled")
    assert cancelled["last_error"] == f"parent job {parent} ended dead"
    listed = daemon.cli_json("jobs", "list", "--status", "cancelled")
    assert [j["id"] for j in listed] == [child]

    (tmp_path / "card.ok").write_text("")  # the card works now
    out = daemon.cli("dlq", "retry", parent)
    assert out.returncode == 0, out.stderr
    daemon.wait_job(parent, "succeeded")
    done = daemon.wait_job(child, "succeeded")
    assert done["last_error"] is None
    assert (tmp_path / "steps.log").read_text() == "receipt\n"
