"""`GET /v1/watch`: one watcher's lifecycle events as a server-sent event stream.

The response lives as long as the watcher: it ends when the client goes away (the watcher is
closed and forgotten) or when the daemon stops (the bus closes every watcher). A client that
stops reading never slows the daemon: its watcher drops and counts, the bus moves on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from timeos.daemon.telemetry import Lifecycle, Watcher

MEDIA_TYPE = "text/event-stream"
OPENING = b": timeosd watch\n\n"  # a comment: the stream is open and the watcher subscribed


def frame(event: Lifecycle) -> bytes:
    """One event in SSE framing: `event: KIND`, `data: JSON` (one line), a blank line."""
    data = json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":"))
    return f"event: {event.kind}\ndata: {data}\n\n".encode()


class EventStream(Response):
    """A streaming response fed by a Watcher; `on_end` forgets the watcher when it ends."""

    media_type = MEDIA_TYPE

    def __init__(
        self,
        watcher: Watcher,
        on_end: Callable[[Watcher], None],
        framer: Callable[[Lifecycle], bytes] = frame,
    ) -> None:
        # Not Response.__init__: that would declare a body (content-length: 0); this one is
        # sent chunk by chunk for as long as the watcher lives.
        self.watcher = watcher
        self.on_end = on_end
        self.framer = framer  # the dashboard sends its own, smaller frames
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-store"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        listener = asyncio.ensure_future(self._listen(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": OPENING, "more_body": True})
            # A reader that stops reading blocks this send, never the bus: its watcher fills up
            # and counts drops. At shutdown its connection is cut (connections.py), which ends
            # the send, and the closed watcher ends the loop.
            while (event := await self.watcher.next()) is not None:
                await send(
                    {"type": "http.response.body", "body": self.framer(event), "more_body": True}
                )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            listener.cancel()
            self.on_end(self.watcher)

    async def _listen(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.watcher.close()  # the client went away: end the stream, free the watcher
