"""The rules fingerprint daemons sharing a database compare: equal for the same rules wherever
and in whatever order they are written, different as soon as a rule does something else."""

from __future__ import annotations

from pathlib import Path

import pytest

from timeos.rules.fingerprint import fingerprint
from timeos.rules.loader import load_rules

RULES = """\
actions:
  hook:
    http: {{url: "https://example.com/hook", headers: {{Authorization: "Bearer ${{TOKEN}}"}}}}
  noop:
    command: ["true"]
rules:
  - {{name: welcome, on_event: user_signup, perform: hook, when: "payload.plan == 'pro'"}}
  - {{name: nightly, cron: "{cron}", timezone: Europe/Paris, perform: noop}}
"""
REORDERED = """\
# the same rules, in another order and layout
rules:
  - name: nightly
    cron: "30 2 * * *"
    timezone: Europe/Paris
    perform: noop
  - {name: welcome, on_event: user_signup, when: "payload.plan == 'pro'", perform: hook}
actions:
  noop: {command: ["true"]}
  hook:
    http:
      url: "https://example.com/hook"
      headers: {Authorization: "Bearer ${TOKEN}"}
"""


def _load(path: Path, text: str, token: str = "s3cret-token") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return fingerprint(load_rules([path], {"TOKEN": token}))


def test_the_same_rules_in_another_file_order_and_place_have_one_fingerprint(tmp_path):
    a = _load(tmp_path / "a" / "rules.yaml", RULES.format(cron="30 2 * * *"))
    b = _load(tmp_path / "elsewhere" / "other.yaml", REORDERED)
    assert a == b and len(a) == 64


@pytest.mark.parametrize(
    "change",
    [
        ("30 2 * * *", "31 2 * * *"),
        ("Europe/Paris", "UTC"),
        ("'pro'", "'free'"),
        ("example.com/hook", "example.com/other"),
        ('["true"]', '["false"]'),
        ("name: welcome", "name: hello"),
    ],
    ids=["cron", "timezone", "condition", "url", "argv", "rule-name"],
)
def test_any_change_to_what_a_rule_does_changes_the_fingerprint(tmp_path, change):
    text = RULES.format(cron="30 2 * * *")
    old, new = change
    assert old in text
    before = _load(tmp_path / "a.yaml", text)
    assert _load(tmp_path / "b.yaml", text.replace(old, new)) != before


def test_a_secret_from_the_environment_never_feeds_the_hash(tmp_path):
    text = RULES.format(cron="30 2 * * *")
    one = _load(tmp_path / "a.yaml", text, token="first-secret")
    assert _load(tmp_path / "b.yaml", text, token="second-secret") == one
    # The text around the ${VAR} still counts.
    changed = text.replace("Bearer ${TOKEN}", "Token ${TOKEN}")
    assert changed != text
    assert _load(tmp_path / "c.yaml", changed, token="first-secret") != one


def test_the_example_rules_have_a_fingerprint():
    example = Path(__file__).parent.parent / "rules.example.yaml"
    rules = load_rules([example], {}, import_python=False)
    assert fingerprint(rules) == fingerprint(load_rules([example], {}, import_python=False))
