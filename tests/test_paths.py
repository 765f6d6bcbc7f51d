"""Default locations: flags, TIMEOS_*, (CLI only) the system socket, systemd dirs, XDG, /tmp."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from timeos.paths import SYSTEM_SOCKET, default_db, default_rules, default_socket

UID = os.getuid()


@pytest.mark.parametrize(
    ("environ", "system", "expected"),
    [
        ({"TIMEOS_SOCKET": "/x/t.sock", "RUNTIME_DIRECTORY": "/run/timeos"}, True, "/x/t.sock"),
        ({"RUNTIME_DIRECTORY": "/srv/rt", "XDG_RUNTIME_DIR": "/run/user/1"}, True, "SYSTEM"),
        ({"XDG_RUNTIME_DIR": "/run/user/1"}, True, "SYSTEM"),
        ({}, True, "SYSTEM"),
        (
            {"RUNTIME_DIRECTORY": "/run/timeos", "XDG_RUNTIME_DIR": "/run/user/1"},
            False,
            "/run/timeos/timeos.sock",
        ),
        ({"XDG_RUNTIME_DIR": "/run/user/1"}, False, "/run/user/1/timeos/timeos.sock"),
        ({}, False, f"/tmp/timeos-{UID}/timeos.sock"),
    ],
    ids=[
        "env-beats-system",
        "system-beats-runtime-dir",
        "system-beats-xdg",
        "system-beats-fallback",
        "runtime-dir",
        "xdg",
        "fallback",
    ],
)
def test_socket(environ, system, expected, tmp_path):
    # A real socket stands in for /run/timeos/timeos.sock when the row says the system has one.
    path = tmp_path / "timeos.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        if system:
            listener.bind(str(path))
        wanted = path if expected == "SYSTEM" else Path(expected)
        assert default_socket(environ, system_socket=path) == wanted


def test_system_socket_is_picked_only_if_it_is_a_socket(tmp_path):
    not_a_socket = tmp_path / "timeos.sock"
    not_a_socket.write_text("")
    expected = Path("/run/user/1/timeos/timeos.sock")
    assert default_socket({"XDG_RUNTIME_DIR": "/run/user/1"}, not_a_socket) == expected


def test_the_system_socket_is_the_one_the_socket_unit_listens_on():
    unit = (Path(__file__).parent.parent / "systemd" / "timeosd.socket").read_text()
    assert f"ListenStream={SYSTEM_SOCKET}" in unit.splitlines()


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
