"""Default locations of the socket, database and rules: systemd directories, then XDG, then /tmp.

Stdlib only: the CLI imports this on every call.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

# Where the systemd units put the system daemon's socket (systemd/timeosd.socket).
SYSTEM_SOCKET = Path("/run/timeos/timeos.sock")


def default_socket(environ: Mapping[str, str], system_socket: Path | None = SYSTEM_SOCKET) -> Path:
    """$TIMEOS_SOCKET, the system daemon's socket if it exists, $RUNTIME_DIRECTORY (systemd),
    $XDG_RUNTIME_DIR/timeos or /tmp/timeos-UID.

    The CLI looks for the system socket so an operator's shell needs no variable; timeosd
    passes `system_socket=None`, so a daemon started by hand never reaches for the system one.
    """
    if environ.get("TIMEOS_SOCKET"):
        return Path(environ["TIMEOS_SOCKET"])
    if system_socket is not None and _is_socket(system_socket):
        return system_socket
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


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:  # absent, or a directory we may not look into: not ours to pick
        return False
