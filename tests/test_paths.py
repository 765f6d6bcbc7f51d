"""Default locations: flags beat TIMEOS_*, which beat systemd's directories, then XDG, then /tmp."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from timeos.paths import default_db, default_rules, default_socket

UID = os.getuid()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"TIMEOS_SOCKET": "/x/t.sock", "RUNTIME_DIRECTORY": "/run/timeos"}, "/x/t.sock"),
        (
            {"RUNTIME_DIRECTORY": "/run/timeos", "XDG_RUNTIME_DIR": "/run/user/1"},
            "/run/timeos/timeos.sock",
        ),
        ({"XDG_RUNTIME_DIR": "/run/user/1"}, "/run/user/1/timeos/timeos.sock"),
        ({}, f"/tmp/timeos-{UID}/timeos.sock"),
    ],
    ids=["env", "systemd", "xdg", "fallback"],
)
def test_socket(environ, expected):
    assert default_socket(environ) == Path(expected)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"TIMEOS_DB": "/d/t.db", "STATE_DIRECTORY": "/var/lib/timeos"}, "/d/t.db"),
        ({"STATE_DIRECTORY": "/var/lib/timeos:/other"}, "/var/lib/timeos/timeos.db"),
        ({"XDG_STATE_HOME": "/s", "HOME": "/h"}, "/s/timeos/timeos.db"),
        ({"HOME": "/h"}, "/h/.local/state/timeos/timeos.db"),
    ],
    ids=["env", "systemd-first-of-several", "xdg", "home"],
)
def test_db(environ, expected):
    assert default_db(environ) == Path(expected)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"TIMEOS_RULES": "/a.yaml:/rules.d"}, ["/a.yaml", "/rules.d"]),
        ({"CONFIGURATION_DIRECTORY": "/etc/timeos"}, ["/etc/timeos/rules.yaml"]),
        ({}, ["rules.yaml"]),
    ],
    ids=["env-list", "systemd", "cwd"],
)
def test_rules(environ, expected):
    assert default_rules(environ) == [Path(p) for p in expected]
