"""Loading `cancel_on:` and `debounce:` (rules/correlation.py): what is accepted, and every
mistake reported with its file:line:col."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from timeos.errors import RulesError
from timeos.model import RuleSet
from timeos.rules.correlation import value_at
from timeos.rules.loader import load_rules

HEAD = """\
actions:
  a: {command: [/bin/true]}
rules:
  - name: remind
    on_event: order_created
    perform: a
"""


def _load(tmp_path: Path, body: str) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(HEAD + body)
    return load_rules([path], {})


def _problems(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(RulesError) as caught:
        _load(tmp_path, body)
    return [f"{p.where}: {p.message}" for p in caught.value.problems]


def test_path_and_expression_matches_load(tmp_path: Path) -> None:
    rules = _load(
        tmp_path,
        "    cancel_on:\n"
        "      - {event: order_paid, match: payload.order.id}\n"
        "      - {event: order_refunded, match: 'payload.id == origin.order.id'}\n",
    )
    rule = rules.rules[0]
    path, cel = rule.cancel_on
    assert (path.event, path.path, path.expression) == ("order_paid", ("order", "id"), None)
    assert cel.path is None and cel.expression is not None
    assert cel.expression.evaluate({"id": 7}, {"order": {"id": 7}}) is True
    assert cel.expression.evaluate({"id": 8}, {"order": {"id": 7}}) is False


def test_debounce_loads_with_and_without_max_wait(tmp_path: Path) -> None:
    rules = _load(tmp_path, "    debounce: {key: payload.user_id, period: 10m, max_wait: 1h}\n")
    debounce = rules.rules[0].debounce
    assert debounce is not None
    assert (debounce.path, debounce.period, debounce.max_wait) == (
        ("user_id",),
        timedelta(minutes=10),
        timedelta(hours=1),
    )
    rules = _load(tmp_path, "    debounce: {key: payload.user_id, period: 10m}\n")
    assert rules.rules[0].debounce is not None and rules.rules[0].debounce.max_wait is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "    cancel_on: [{event: order_paid, match: 'payload.a == orgin.a'}]\n",
            "rules.yaml:7:58: rule 'remind': cancel_on[0].match 'payload.a == orgin.a' is"
            " neither a path (payload.order_id) nor an expression over payload and origin:"
            " unknown variable 'orgin' (did you mean 'origin'?)",
        ),
        (
            "    cancel_on: [{event: order_paid, match: 'payload.a ==' }]\n",
            "rules.yaml:7:",
        ),
        (
            "    cancel_on: [{event: order_paid, match: payload.id, within: 1h}]\n",
            "rules.yaml:7:56: rule 'remind': cancel_on[0]: unknown key 'within'",
        ),
        (
            "    cancel_on: [{match: payload.id}]\n",
            "rules.yaml:7:17: rule 'remind': cancel_on[0]: missing `event:`",
        ),
        (
            "    cancel_on: [{event: 'no spaces', match: payload.id}]\n",
            "rules.yaml:7:25: rule 'remind': cancel_on[0].event 'no spaces' is not an event type",
        ),
        (
            "    cancel_on: {event: order_paid, match: payload.id}\n",
            "rules.yaml:7:16: rule 'remind': cancel_on must be a list",
        ),
        ("    cancel_on: []\n", "rules.yaml:7:16: rule 'remind': cancel_on is empty"),
        (
            "    debounce: {key: user_id, period: 10m}\n",
            "rules.yaml:7:21: rule 'remind': debounce.key 'user_id' must be a path into the"
            " payload: payload.user_id",
        ),
        (
            "    debounce: {key: payload.user_id, period: soon}\n",
            "rules.yaml:7:46: rule 'remind': debounce.period",
        ),
        (
            "    debounce: {key: payload.user_id, period: 10m, max_wait: 5m}\n",
            "rules.yaml:7:61: rule 'remind': debounce.max_wait (5m) must be at least"
            " debounce.period (10m)",
        ),
        (
            "    debounce: {key: payload.user_id}\n",
            "rules.yaml:7:15: rule 'remind': debounce: missing `period:`",
        ),
        (
            "    debounce: {key: payload.user_id, period: 1m, every: 2m}\n",
            "rules.yaml:7:50: rule 'remind': debounce: unknown key 'every'",
        ),
        (
            "    cancel_on: [{event: order_paid, match: origin.order_id}]\n",
            "rules.yaml:7:44: rule 'remind': cancel_on[0].match 'origin.order_id' is a value,"
            " not a match: write a path into the new event (payload.order_id",
        ),
        (
            "    cancel_on: [{event: order_paid, match: payload}]\n",
            "rules.yaml:7:44: rule 'remind': cancel_on[0].match 'payload' is a value",
        ),
    ],
    ids=[
        "cel-unknown-variable", "cel-syntax", "unknown-key", "missing-event", "bad-event-type",
        "not-a-list", "empty", "debounce-key-not-path", "bad-period", "max-wait-below-period",
        "missing-period", "debounce-unknown-key", "origin-path", "bare-payload",
    ],
)  # fmt: skip
def test_mistakes_are_load_errors_with_their_position(
    tmp_path: Path, body: str, expected: str
) -> None:
    problems = _problems(tmp_path, body)
    assert any(p.split("/")[-1].startswith(expected) for p in problems), problems


def test_correlation_keys_only_apply_to_event_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "actions:\n  a: {command: [/bin/true]}\nrules:\n"
        "  - {name: tick, every: 1h, perform: a,"
        " cancel_on: [{event: e, match: payload.x}], debounce: {key: payload.x, period: 1m}}\n"
    )
    with pytest.raises(RulesError) as caught:
        load_rules([path], {})
    messages = [p.message for p in caught.value.problems]
    assert "rule 'tick': cancel_on only applies to on_event rules" in messages
    assert "rule 'tick': debounce only applies to on_event rules" in messages


@pytest.mark.parametrize(
    ("payload", "path", "expected"),
    [
        ({"a": {"b": 1}}, ("a", "b"), "1"),
        ({"a": "x"}, ("a",), '"x"'),
        ({"a": {"z": 1, "y": [2]}}, ("a",), '{"y":[2],"z":1}'),
        ({"a": None}, ("a",), None),
        ({"a": 1}, ("a", "b"), None),
        ({}, ("a",), None),
    ],
    ids=["nested", "string", "canonical-object", "null", "through-a-scalar", "missing"],
)
def test_value_at_gives_canonical_json_or_none(
    payload: dict[str, object], path: tuple[str, ...], expected: str | None
) -> None:
    assert value_at(payload, path) == expected


def test_debounce_on_an_after_rule_is_a_load_error(tmp_path: Path) -> None:
    # Only a chain's head is debounced: on an after: rule it would silently do nothing.
    problems = _problems(
        tmp_path,
        "  - name: follow\n    on_event: order_created\n    after: remind\n    perform: a\n"
        "    debounce: {key: payload.id, period: 1m}\n",
    )
    assert any(
        p.endswith(
            "rules.yaml:11:5: rule 'follow': debounce does not combine with after:"
            " debounce the rule it waits on"
        )
        for p in problems
    ), problems
