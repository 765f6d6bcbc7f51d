"""Socket activation (sd_listen_fds): serve on the listening socket systemd passes as fd 3.

systemd (timeosd.socket) binds /run/timeos/timeos.sock itself, so clients can connect before
timeosd runs and while it restarts; the kernel queues them until timeosd accepts.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import MutableMapping

from timeos.errors import UsageError

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START: passed descriptors begin here
LISTEN_VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def inherited_socket(
    environ: MutableMapping[str, str], pid: int, fd: int = LISTEN_FDS_START
) -> socket.socket | None:
    """The socket systemd passed us, or None when LISTEN_FDS/LISTEN_PID do not name our `pid`.

    The variables are removed from `environ` either way, so no child believes they are its.
    More than one descriptor, or one that is not a listening Unix stream socket, is refused:
    serving on the wrong thing would be worse than not starting.
    """
    count, for_pid, _names = (environ.pop(name, None) for name in LISTEN_VARIABLES)
    if not count or not for_pid or not for_pid.isdigit() or int(for_pid) != pid:
        return None
    if count != "1":
        raise UsageError(
            f"LISTEN_FDS={count!r}: timeosd serves on exactly one socket; give the socket unit"
            " one ListenStream="
        )
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise UsageError(f"LISTEN_FDS=1 but descriptor {fd} is not open: {exc.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise UsageError(f"LISTEN_FDS=1 but descriptor {fd} is not a socket")
    sock = socket.socket(fileno=fd)
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()  # not ours to close: whoever passed it may still want it
        raise UsageError(
            f"descriptor {fd} from the service manager is not a listening Unix stream socket;"
            " use ListenStream=/path in the socket unit"
        )
    # systemd passes it inheritable; our command actions must not hold the API socket open.
    os.set_inheritable(fd, False)
    sock.setblocking(False)
    return sock
