"""sd_notify(3) that never blocks the event loop.

The notify socket is a datagram socket whose reader is systemd. When its
queue is full (systemd busy or wedged, or any reader that does not drain),
a blocking send waits for room, and on the event loop that stops every
sweep; the ``sdnotify`` package did exactly that. Here the socket is
non-blocking and a datagram that finds no room is not sent: its state
(``READY``, ``STATUS``, ``STOPPING``...) is kept, newest value per
variable, and goes out with the next notification that fits. ``WATCHDOG=1``
is never kept for later: it vouches for the loop at the moment it is
written, and a loop that cannot reach systemd for a whole watchdog period
should be restarted.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

# Variables that only mean something when sent at once.
NOT_DEFERRED = frozenset({"WATCHDOG"})


class Notifier:
    """Sends notifications to ``$NOTIFY_SOCKET`` (a path, or ``@name`` in
    the abstract namespace); does nothing without one."""

    def __init__(self, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        self._sock: socket.socket | None = None
        self._pending: dict[str, str] = {}
        self._failing = False
        self.dropped = 0  # notifications that found the queue full
        address = env.get("NOTIFY_SOCKET", "")
        if not address:
            return
        if address.startswith("@"):
            address = "\0" + address[1:]
        elif not address.startswith("/"):
            log.warning("NOTIFY_SOCKET %r is not a unix socket path; not notifying systemd", address)
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        try:
            sock.connect(address)
        except OSError as exc:
            sock.close()
            log.warning("cannot reach NOTIFY_SOCKET %s: %s; not notifying systemd", env["NOTIFY_SOCKET"], exc)
            return
        self._sock = sock

    @property
    def pending(self) -> dict[str, str]:
        """What waits for room in the queue (a copy)."""
        return dict(self._pending)

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (``VAR=value``), with anything kept from before, in
        one datagram now, or keep them (except ``WATCHDOG``) and return
        False. Never waits."""
        if self._sock is None:
            return False
        state = dict(self._pending)
        for line in lines:
            name, _, value = line.partition("=")
            state.pop(name, None)  # the newest value goes last, in the order given
            state[name] = value
        data = "\n".join(f"{k}={v}" for k, v in state.items()).encode()
        try:
            self._sock.send(data)
        except OSError as exc:  # BlockingIOError: the queue is full; ECONNREFUSED: the reader is gone
            self.dropped += 1
            self._pending = {k: v for k, v in state.items() if k not in NOT_DEFERRED}
            if not self._failing:
                why = "its queue is full" if isinstance(exc, BlockingIOError) else str(exc)
                log.warning("cannot notify systemd now (%s): notifications wait, WATCHDOG=1 is skipped", why)
                self._failing = True
            return False
        if self._failing:
            log.info("the systemd notify socket takes notifications again")
        self._failing = False
        self._pending.clear()
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
