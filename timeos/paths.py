"""Default locations of the socket, database and rules: systemd directories, then XDG, then /tmp.

Stdlib only: the CLI imports this on every call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def default_socket(environ: Mapping[str, str]) -> Path:
    """$TIMEOS_SOCKET, $RUNTIME_DIRECTORY (systemd), $XDG_RUNTIME_DIR/timeos or /tmp/timeos-UID."""
    if environ.get("TIMEOS_SOCKET"):
        return Path(environ["TIMEOS_SOCKET"])
    if environ.get("RUNTIME_DIRECTORY"):
        return Path(environ["RUNTIME_DIRECTORY"].split(":")[0]) / "timeos.sock"
    if environ.get("XDG_RUNTIME_DIR"):
        return Path(environ["XDG_RUNTIME_DIR"]) / "timeos" / "timeos.sock"
    return Path(f"/tmp/timeos-{os.getuid()}") / "timeos.sock"


def default_db(environ: Mapping[str, str]) -> Path:
    """$TIMEOS_DB, $STATE_DIRECTORY (systemd), $XDG_STATE_HOME/timeos or ~/.local/state/timeos."""
    if environ.get("TIMEOS_DB"):
        return Path(environ["TIMEOS_DB"])
    if environ.get("STATE_DIRECTORY"):
        return Path(environ["STATE_DIRECTORY"].split(":")[0]) / "timeos.db"
    state = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME", "~")) / ".local/state")
    return Path(state).expanduser() / "timeos" / "timeos.db"


def default_rules(environ: Mapping[str, str]) -> list[Path]:
    """$TIMEOS_RULES (os.pathsep list), $CONFIGURATION_DIRECTORY/rules.yaml, else ./rules.yaml."""
    if environ.get("TIMEOS_RULES"):
        return [Path(p) for p in environ["TIMEOS_RULES"].split(os.pathsep) if p]
    if environ.get("CONFIGURATION_DIRECTORY"):
        return [Path(environ["CONFIGURATION_DIRECTORY"].split(":")[0]) / "rules.yaml"]
    return [Path("rules.yaml")]
