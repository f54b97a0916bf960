"""The ordered writer of a websocket: frames go out in order from whichever
greenlet sends them, never blocking it.

A frame goes straight to the kernel with a non-blocking send. What the
kernel does not take (a client reading slowly, a burst larger than the
socket buffer) goes to a backlog that one short-lived flusher greenlet
drains in order; while it is not empty every later frame queues behind it,
so frames never interleave. The backlog is bounded (``backlog_messages`` /
``_bytes``): past it the frame is dropped and ``on_overflow`` is told once,
so the session can be closed.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import struct

import gevent
from geventwebsocket.websocket import WebSocket

# How long a websocket whose session ended may still send before its TCP
# connection is cut off (a client that does not read would hold it).
ENDING_GRACE_S = 2.0
# Frames one greenlet may hold back (``OrderedWriter.hold``) before they go.
MAX_HELD = 16


class Counts:
    """What this process holds, for /metrics (one instance per process)."""

    __slots__ = ("connections", "flushers", "drains")

    def __init__(self) -> None:
        self.connections = 0
        self.flushers = 0
        self.drains = 0  # running: the server's close waits for them


counts = Counts()


class OrderedWriter:
    """The writing half of ``LimitedWebSocket`` (which holds the slots)."""

    __slots__ = ()

    def write(self, frame: bytes) -> bool:
        """Send one encoded frame in order, without blocking; False if dropped."""
        if self.closed:
            return False
        holder = self.holder
        if holder is not None:
            if holder is gevent.getcurrent() and len(self.held) < MAX_HELD:
                self.held.append(frame)
                return True
            self.release()
        return self.send_now(frame)

    # -- holding: one system call for what one event answers ----------------
    def hold(self, first: bytes = b"") -> None:
        """Keep what this greenlet writes until ``release``, then send it at once.

        Every ``send`` to a client costs a system call and a wake-up of its
        reader, whatever its size. The frames one event answers with (a
        login's ``login`` and ``history``, a connect's acknowledgement and
        the login through ``auth``) go out together instead, and so do the
        101 of a handshake (``first``) and engine.io's open packet. A frame
        another greenlet writes meanwhile (a broadcast, a ping) sends what is
        held first, then itself: order is kept and nobody else waits.
        """
        if self.holder is None:
            self.holder = gevent.getcurrent()
            self.held = [first] if first else []

    def release(self) -> None:
        """Send what ``hold`` kept, as one write; before any read (a client
        may be waiting for it) and before the close frame."""
        held = self.held
        if self.holder is None:
            return
        self.holder = self.held = None
        if held:
            self.send_now(held[0] if len(held) == 1 else b"".join(held))

    def send_now(self, frame) -> bool:
        """Send ``frame`` after what is in the backlog, without blocking;
        False if dropped. Only when nothing is held (``holder`` is None) or
        when ``release`` sends what was: else ``write``, which keeps order.
        A broadcast's loop (chat.internals.emit) calls it for each recipient
        that holds nothing, a Python call less than through ``write``."""
        if self.shut_down:
            return False
        if self.flusher is None:
            try:
                # The native socket under gevent's (non-blocking: a send
                # the kernel cannot take raises), without gevent's wrapper,
                # which only adds the wait this never does. Per recipient
                # of a broadcast: 0.3-0.6 µs less.
                sent = self.raw_socket._sock.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._shut_down()
                return False
            if sent == len(frame):
                return True
            frame = memoryview(frame)[sent:]
            self.backlog = collections.deque((frame,))
            self.backlog_bytes = len(frame)
            counts.flushers += 1
            self.flusher = gevent.spawn(self._flush)
            return True
        limits = self.limits
        if (
            len(self.backlog) >= limits.backlog_messages
            or self.backlog_bytes + len(frame) > limits.backlog_bytes
        ):
            if not self.overflowed:
                self.overflowed = True
                if self.on_overflow is not None:
                    self.on_overflow()
            return False
        self.backlog.append(frame)
        self.backlog_bytes += len(frame)
        return True

    def _flush(self) -> None:
        """Drain the backlog in order; the only greenlet that may block writing."""
        backlog = self.backlog
        try:
            while backlog:
                chunk = backlog[0]
                self.raw_socket.sendall(chunk)
                backlog.popleft()
                self.backlog_bytes -= len(chunk)
        except OSError:
            self._shut_down()
        finally:
            counts.flushers -= 1
            self.flusher = self.backlog = None
            self.backlog_bytes = 0
        if self.closed:
            self._shut_down()

    def drain(self, timeout: float) -> None:
        """Wait (in the connection's own greenlet) until the backlog is written,
        at most ``timeout``, then end the TCP connection: the server closes
        the socket once its handler returns, and would cut the backlog off."""
        flusher = self.flusher
        if flusher is not None:
            flusher.join(timeout)
        self._shut_down()

    def _shut_down(self) -> None:
        if not self.shut_down:
            self.shut_down = True
            with contextlib.suppress(OSError):
                self.raw_socket.shutdown(socket.SHUT_RDWR)


def encode_frame(payload: bytes, opcode: int = WebSocket.OPCODE_TEXT) -> bytes:
    """One unmasked, unfragmented server frame."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, length)
    elif length <= 0xFFFF:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return header + payload


# Websockets whose session ended, and when to cut them off if still open.
_ending: dict = {}


def end_within_grace(websocket: OrderedWriter, now: float) -> None:
    """Cut ``websocket`` off at ``now + ENDING_GRACE_S`` unless it ends first."""
    if not websocket.shut_down:
        _ending.setdefault(websocket, now + ENDING_GRACE_S)


def cut_off_after_grace(websocket: OrderedWriter) -> None:
    """``websocket`` is closed but its backlog still being written: cut its
    TCP connection off ``ENDING_GRACE_S`` from now if that takes longer."""
    _ending[websocket] = gevent.get_hub().loop.now() + ENDING_GRACE_S


def cut_off_ended(now: float) -> None:
    """Shut down the TCP connection of ended sessions past their grace."""
    for websocket, deadline in list(_ending.items()):
        if websocket.shut_down:
            del _ending[websocket]
        elif now >= deadline:
            del _ending[websocket]
            websocket._shut_down()
