"""Tests for timeos.rules.conditions: compiling and evaluating CEL `when:` expressions."""

from __future__ import annotations

from typing import Any

import pytest

from timeos.errors import ConditionFailed
from timeos.rules.conditions import CelCondition, ConditionSyntax, compile_condition


@pytest.mark.parametrize(
    ("source", "payload", "event", "expected"),
    [
        ("payload.amount > 1000", {"amount": 2000}, {}, True),
        ("payload.amount > 1000", {"amount": 10}, {}, False),
        ("payload.amount > 1000", {"amount": 1000.5}, {}, True),
        ("payload.plan == 'gold' && payload.seats >= 5", {"plan": "gold", "seats": 5}, {}, True),
        ("event.type == 'user_signup'", {}, {"type": "user_signup"}, True),
        ("has(payload.coupon)", {}, {}, False),
        ("payload.items.exists(i, i.id == 'A')", {"items": [{"id": "B"}, {"id": "A"}]}, {}, True),
        ("size(payload.tags) == 0", {"tags": []}, {}, True),
        ("'vip' in payload.tags", {"tags": ["new", "vip"]}, {}, True),
        ("true", {}, {}, True),
    ],
    ids=[
        "greater", "not-greater", "int-vs-double", "and", "event-field", "has-missing",
        "exists-macro", "size", "in-list", "literal-true",
    ],
)  # fmt: skip
def test_evaluate_returns_the_expressions_truth(
    source: str, payload: dict[str, Any], event: dict[str, Any], expected: bool
) -> None:
    assert compile_condition(source).evaluate(payload, event) is expected


@pytest.mark.parametrize(
    ("source", "payload", "message"),
    [
        ("payload.amount > 1000", {}, "no such key 'amount'"),
        ("payload.amount > 1000", {"amount": "lots"}, "No such overload"),
        ("payload.a / payload.b == 1", {"a": 1, "b": 0}, "division by zero"),
        ("payload.items[3] == 1", {"items": [1]}, "index out of bounds"),
        ("nope(payload.a)", {"a": 1}, "Undefined variable or function: 'nope'"),
    ],
    ids=[
        "missing-key",
        "type-mismatch",
        "division-by-zero",
        "index-out-of-range",
        "unknown-function",
    ],
)
def test_runtime_error_raises_condition_failed_naming_expression_and_problem(
    source: str, payload: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConditionFailed) as caught:
        compile_condition(source).evaluate(payload, {})
    assert f"condition {source!r} failed: " in caught.value.message
    assert message in caught.value.message
    assert caught.value.code == "condition_failed"


def test_non_bool_result_raises_condition_failed() -> None:
    with pytest.raises(
        ConditionFailed, match=r"condition 'payload.amount' gave int 5, not true or false"
    ):
        compile_condition("payload.amount").evaluate({"amount": 5}, {})


def test_evaluate_value_returns_whatever_the_expression_yields() -> None:
    zone = compile_condition("payload.tz")
    assert zone.evaluate_value({"tz": "Europe/Paris"}, {}) == "Europe/Paris"
    assert compile_condition("payload.n * 2").evaluate_value({"n": 21}, {}) == 42


def test_evaluate_value_raises_condition_failed_on_missing_field() -> None:
    with pytest.raises(ConditionFailed, match="no such key 'tz'"):
        compile_condition("payload.tz").evaluate_value({}, {})


@pytest.mark.parametrize(
    ("source", "line", "column", "message"),
    [
        ("payload.amount >", 1, 17, "the expression ends too early"),
        ("payload.amount > > 3", 1, 18, "extraneous input '>'"),
        ("payload.a b", 1, 11, "extraneous input 'b'"),
        ("payload.a >\n  > 3", 2, 3, "extraneous input '>'"),
        ("", 1, 1, "the expression ends too early"),
    ],
    ids=["ends-early", "double-operator", "two-operands", "second-line", "empty"],
)
def test_syntax_error_raises_condition_syntax_with_position(
    source: str, line: int, column: int, message: str
) -> None:
    with pytest.raises(ConditionSyntax) as caught:
        compile_condition(source)
    assert (caught.value.line, caught.value.column) == (line, column)
    assert message in caught.value.message
    assert "expecting {" not in caught.value.message  # the token soup is trimmed


@pytest.mark.parametrize(
    ("source", "column", "message"),
    [
        ("paylod.amount > 1", 1, "unknown variable 'paylod' (did you mean 'payload'?)"),
        (
            "payload.a > 1 && evnt.type == 'x'",
            18,
            "unknown variable 'evnt' (did you mean 'event'?)",
        ),
        (
            "amount > 1",
            1,
            "unknown variable 'amount'; an expression can use only payload and event",
        ),
    ],
    ids=["payload-typo", "event-typo", "bare-name"],
)
def test_unknown_variable_is_a_compile_error_not_a_silent_false(
    source: str, column: int, message: str
) -> None:
    with pytest.raises(ConditionSyntax) as caught:
        compile_condition(source)
    assert caught.value.column == column
    assert message in caught.value.message


def test_comprehension_variables_are_not_unknown() -> None:
    condition = compile_condition("payload.items.all(item, item > 0) && [1].map(x, x * 2)[0] == 2")
    assert condition.evaluate({"items": [1, 2]}, {}) is True


def test_python_code_is_never_evaluated() -> None:
    condition = compile_condition("__import__('os').system('false') == 0")
    with pytest.raises(ConditionFailed, match="Undefined variable or function"):
        condition.evaluate({}, {})


def test_conditions_compare_and_hash_by_source() -> None:
    first, second = compile_condition("payload.a == 1"), compile_condition("payload.a == 1")
    assert first == second
    assert hash(first) == hash(second)
    assert first != compile_condition("payload.a == 2")
    assert isinstance(first, CelCondition)
    assert first.source == "payload.a == 1"
