"""Limits on the API socket's connections: a deadline to send a request, a cap below the fd limit.

uvicorn closes an idle keep-alive connection only after it has answered a request on it; a
connection that never sends a complete request is held forever, so 1,100 idle clients used
up every file descriptor. This module wraps uvicorn's httptools protocol (llhttp, in C: h11's
pure-Python parsing was 8-14% of an emit's CPU) with both limits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("timeos.connections")

DEFAULT_REQUEST_TIMEOUT = 10.0  # seconds to send a whole request (headers and body)
ACCEPT_BURST = 64  # the listen backlog: asyncio accepts up to this many per wake-up
# asyncio hands an accepted socket to its protocol two loop turns later, so up to three bursts
# are open before the cap can close any of them (measured: the flood below hit EMFILE with one).
ACCEPTS_IN_FLIGHT = 4 * ACCEPT_BURST
FD_RESERVE = 64  # SQLite (two connections, WAL, SHM), the lock, the listener, epoll, logs
FD_RESERVE_PER_WORKER = 16  # a command's pipes, an http action's sockets, a python action's files
SHUTDOWN_FLUSH = 1.0  # seconds a peer gets at shutdown to take what is still buffered for it


NOFILE_WANTED = 65536  # descriptors asked for at start, within the hard limit


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE toward the hard limit (at most NOFILE_WANTED); return it.

    The usual soft limit of 1024 (or less, under a shell's `ulimit -n`) bounds the connection
    cap; the hard limit is what the operator allowed. Go's runtime and nginx do the same.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = NOFILE_WANTED if hard == resource.RLIM_INFINITY else min(hard, NOFILE_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass  # not allowed here: keep the soft limit we have
    return soft


def connection_limit(nofile: int, workers: int) -> int:
    """Connections to hold at once: the fd limit less room for actions, SQLite and one accept."""
    reserve = FD_RESERVE + ACCEPTS_IN_FLIGHT + FD_RESERVE_PER_WORKER * workers
    return max(8, nofile - reserve)


class ConnectionGuard:
    """The limits and the connections waiting for a request, oldest first (shared per server)."""

    def __init__(self, *, max_connections: int, request_timeout: float) -> None:
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.waiting: dict[Any, None] = {}  # protocol -> None: an ordered set
        # Every open connection of every server sharing this guard (the Unix socket and the
        # TCP listener): the cap is on descriptors, whichever listener accepted them.
        self.open: set[Any] = set()
        self.timed_out = 0
        self.evicted = 0
        self.refused = 0

    def protocol(self) -> type[HttpToolsProtocol]:
        """The uvicorn protocol class (`Config(http=...)`) that enforces these limits."""
        return _guarded(self)


_BUSY = json.dumps(
    {"error": {"code": "error", "message": "timeosd is at its connection limit; try again"}}
).encode()
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BUSY), _BUSY)
)


class HeadWithBody:
    """A response cycle's transport that sends a fixed-length answer's head with its body.

    uvicorn writes the status line and headers, then the body: two sends, and two reads (two
    wake-ups) for the client, for every answer. Here a head whose body is to follow (a
    Content-Length above 0, not HEAD) waits for the first write of that body and leaves with
    it. Anything else (100 Continue, streamed and chunked answers, empty bodies) is written at
    once; closing writes a head still held first, as uvicorn would have.
    """

    __slots__ = ("transport", "cycle", "head", "started")

    def __init__(self, transport: Any, cycle: Any) -> None:
        self.transport = transport
        self.cycle = cycle
        self.head = b""
        self.started = False  # the head was written (or held)

    def write(self, data: bytes) -> None:
        cycle = self.cycle
        if not self.started and cycle.response_started:  # this write is the head
            self.started = True
            if (
                cycle.chunked_encoding is False
                and cycle.expected_content_length > 0
                and cycle.scope["method"] != "HEAD"
            ):
                self.head = data
                return
        if self.head:
            data, self.head = self.head + data, b""
        self.transport.write(data)

    def close(self) -> None:
        if self.head:
            self.transport.write(self.head)
            self.head = b""
        self.transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...
        return getattr(self.transport, name)


def _guarded(guard: ConnectionGuard) -> type[HttpToolsProtocol]:
    class GuardedProtocol(HttpToolsProtocol):
        """httptools with a request deadline per connection and the connection cap."""

        _deadline: asyncio.TimerHandle | None = None
        _idle_cycle: Any = None  # the cycle already answered when the deadline was armed

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            guard.open.add(self)
            if len(guard.open) > guard.max_connections and not self._make_room():
                guard.refused += 1
                log.warning(
                    "connection limit (%d) reached and every connection is busy: refused one",
                    guard.max_connections,
                )
                transport.write(_BUSY_RESPONSE)
                transport.close()
                return
            self._arm()

        def _make_room(self) -> bool:
            # Idle connections cost a descriptor and give nothing: the oldest one makes way, so
            # a flood of idle connections cannot lock a real client out.
            for victim in guard.waiting:
                if victim is not self:
                    guard.evicted += 1
                    log.warning(
                        "connection limit (%d) reached: closed the oldest idle connection",
                        guard.max_connections,
                    )
                    victim._drop()
                    return True
            return False

        def _arm(self) -> None:
            self._disarm()
            self._idle_cycle = self.cycle
            self._deadline = self.loop.call_later(guard.request_timeout, self._expire)
            guard.waiting[self] = None

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            guard.waiting.pop(self, None)

        def _check(self) -> None:
            """Stop the deadline once a whole request (headers and body) has arrived."""
            cycle = self.cycle
            if (
                self._deadline is not None
                and cycle is not None
                and cycle is not self._idle_cycle
                and not cycle.more_body
            ):
                self._disarm()

        def _expire(self) -> None:
            self._deadline = None
            guard.timed_out += 1
            log.warning(
                "closed a connection that sent no complete request within %gs",
                guard.request_timeout,
            )
            self._drop()

        def _drop(self) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._check()

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is not None and not isinstance(cycle.transport, HeadWithBody):
                cycle.transport = HeadWithBody(cycle.transport, cycle)  # type: ignore[assignment]

        def on_response_complete(self) -> None:
            self._arm()  # the next request on this keep-alive connection gets its own deadline
            super().on_response_complete()
            if self.transport.is_closing():
                self._disarm()
            else:
                self._check()  # a pipelined request may already be complete

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            guard.open.discard(self)
            super().connection_lost(exc)

        def shutdown(self) -> None:
            super().shutdown()
            # uvicorn waits for every connection to go, and closing a transport waits for its
            # buffer to drain: a peer that stopped reading (a stuck `timeos watch`) would hold
            # the daemon's shutdown for ever. It gets a moment, then the connection is cut.
            self.loop.call_later(SHUTDOWN_FLUSH, self._abort_if_stuck)

        def _abort_if_stuck(self) -> None:
            if self.transport.get_write_buffer_size() > 0:
                log.warning("shutdown: cut a connection whose peer stopped reading")
                self.transport.abort()

    return GuardedProtocol
