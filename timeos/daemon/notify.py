"""systemd's readiness protocol (sd_notify): READY, RELOADING, STATUS, STOPPING and WATCHDOG.

One datagram per message to $NOTIFY_SOCKET (a path, or an abstract socket when it starts with
`@`). Without that variable every call does nothing, so timeosd behaves the same outside systemd.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import MutableMapping

log = logging.getLogger("timeos.daemon")

NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends state changes to the service manager; a no-op when none is listening."""

    def __init__(self, address: str | None = None, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        # systemd's advice: ping at half the interval it gave, so one late ping is not fatal.
        self.watchdog_interval = watchdog_usec / 2_000_000 if watchdog_usec else None
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str], pid: int) -> Notifier:
        """Take NOTIFY_SOCKET and the watchdog settings out of `environ` (children never notify).

        The watchdog applies only when WATCHDOG_PID, if set, is our `pid` (it may name a parent
        that exec'd us or a wrapper); a malformed WATCHDOG_USEC disables it rather than failing.
        """
        address, usec, for_pid = (environ.pop(name, None) for name in NOTIFY_VARIABLES)
        watchdog = None
        if usec and usec.isdigit() and int(usec) > 0:
            if not for_pid or (for_pid.isdigit() and int(for_pid) == pid):
                watchdog = int(usec)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str) -> None:
        """Start-up done (or a reload finished): the socket answers and the rules are loaded."""
        self.send("READY=1", f"STATUS={status}")

    def reloading(self, monotonic_usec: int) -> None:
        """A reload began; `monotonic_usec` is CLOCK_MONOTONIC now, as systemd requires."""
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", "STATUS=reloading rules")

    def heartbeat(self, status: str) -> None:
        """From the scheduler loop: WATCHDOG=1 (if systemd asked for a watchdog) and a STATUS."""
        watchdog = ("WATCHDOG=1",) if self.watchdog_interval is not None else ()
        self.send(*watchdog, f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def send(self, *fields: str) -> bool:
        """Send one message of `KEY=VALUE` lines; False (logged once) if it could not be sent."""
        if self.address is None:
            return False
        message = "\n".join(fields)
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto(message.encode(), target)
        except OSError as exc:
            if not self._failed:  # systemd gone or the socket unreadable: say so once
                log.warning("cannot notify the service manager at %s: %s", self.address, exc)
                self._failed = True
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
