"""The websocket of one connection: every limit checked on the frame header,
and an ordered writer that never blocks the greenlet that sends.

gevent-websocket reads a frame of any declared length, joins continuation
frames without a cap, unmasks byte by byte in Python, and never yields while
the kernel holds more data, so one client could freeze or bloat the process
before engine.io's ``max_http_buffer_size`` is ever looked at.
``LimitedWebSocket`` checks every frame header first (size, opcode, budget),
caps a fragmented message as it grows, unmasks with wsaccel's C code and
yields after a few milliseconds of work. It writes through
``OrderedWriter`` (chat.transport.writer).

Written against the versions in chat.internals.pins; tests/test_internals.py
fails when an upgrade moves what this module relies on.
"""

from __future__ import annotations

import collections
import logging
import socket
import struct
import time
from typing import TYPE_CHECKING

import gevent
from geventwebsocket.exceptions import ProtocolError, WebSocketError
from geventwebsocket.websocket import Header, WebSocket
from wsaccel.xormask import XorMaskerSimple

from chat.limits.buckets import Budget
from chat.transport.workers import run_now
from chat.transport.writer import OrderedWriter, cut_off_after_grace, encode_frame

if TYPE_CHECKING:
    from chat.transport.handler import TransportLimits

log = logging.getLogger(__name__)

# RFC 6455 close codes.
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009

# Longest a websocket's reader runs before it lets others run.
YIELD_AFTER_S = 0.002

# What a reader takes from the kernel at once when it is not waiting.
READ_CHUNK_BYTES = 4096


class OverLimit(WebSocketError):
    """A frame over a limit: the connection is closed with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class LimitedWebSocket(OrderedWriter, WebSocket):
    """gevent-websocket's WebSocket with every limit checked on the header,
    and an ordered writer that never blocks the greenlet that sends.

    Every frame it sends, close and pong included, takes the one path of
    ``OrderedWriter`` (chat.transport.writer).
    """

    __slots__ = (
        "limits",
        "budget",
        "raw_socket",
        "yielded_at",
        "backlog",
        "backlog_bytes",
        "flusher",
        "overflowed",
        "on_overflow",
        "shut_down",
        "holder",
        "held",
        "reader",
        "on_end",
        "watcher",
        "inbuf",
        "close_code",
        "__weakref__",
    )

    def __init__(self, environ, stream, handler, limits: TransportLimits) -> None:
        super().__init__(environ, stream, handler)
        self.limits = limits
        self.budget = Budget(limits.packets_per_s, limits.bytes_per_s)
        self.raw_socket = handler.socket
        self.yielded_at = time.perf_counter()
        self.backlog: collections.deque | None = None  # while a flusher runs
        self.backlog_bytes = 0
        self.flusher = None
        self.overflowed = False
        self.on_overflow = None
        self.shut_down = False
        self.holder = self.held = None  # while frames are held (``hold``)
        self.close_code: int | None = None  # of the close frame this side sent
        # Set by the session that reads this websocket from the top of the
        # connection's greenlet (``ChatWebSocketHandler.run_websocket``):
        # called with the websocket. A bound method, not a partial: a call
        # through C code would add a C-level frame to the stack that every
        # waiting connection keeps a copy of.
        self.reader = None
        # Set by the server that accepted the connection: called once, by
        # ``finish``, when reading is over (closes the socket, counts it).
        self.on_end = None
        # The loop's read watcher while the websocket is parked (``park``).
        self.watcher = None
        # Bytes read from the socket and not yet parsed, once the websocket
        # reads its socket itself (``read_socket_directly``); before that it
        # reads through the HTTP handler's buffered reader.
        self.inbuf: bytes | None = None

    # -- writing --------------------------------------------------------------
    def send_frame(self, message, opcode):
        """gevent-websocket's frame, written through the ordered writer."""
        if self.closed:
            raise WebSocketError("Connection is already closed")
        if isinstance(message, str):
            message = message.encode("utf-8")
        elif not isinstance(message, (bytes, bytearray)):
            message = str(message).encode("utf-8")
        self.write(encode_frame(message, opcode))

    # -- reading ------------------------------------------------------------
    def read_socket_directly(self, rfile) -> None:
        """Read the socket itself from now on, not through ``rfile``.

        A buffered reader costs its buffer, and a C-level frame on the stack
        of every connection waiting in it. Whatever ``rfile`` holds already
        is taken over first, without waiting: a client may have sent frames
        in the same packet as the last one read through it.
        """
        sock = self.raw_socket
        sock.settimeout(0.0)
        try:
            pending = rfile.read1(self.limits.max_message_bytes + 14)
        except OSError:
            pending = b""
        finally:
            sock.settimeout(None)
        self.inbuf = pending or b""
        self.stream = self.raw_read = None

    def read(self, n: int) -> bytes:
        """``n`` bytes (fewer only at the end of the connection)."""
        inbuf = self.inbuf
        if inbuf is None:
            return self.raw_read(n)
        while len(inbuf) < n:
            chunk = self.raw_socket.recv(max(n - len(inbuf), 4096))
            if not chunk:
                break
            inbuf += chunk
        self.inbuf = inbuf[n:]
        return inbuf[:n]

    def ready_to_read(self) -> bool:
        """Whether the next frame can be read without waiting for the client.

        True when bytes are buffered, when the kernel has some (taken into
        the buffer now, without waiting), and once the connection is over
        (the read that follows meets its end). False: ``park`` it.
        """
        if self.inbuf or self.closed:
            return True
        try:
            # The native socket under gevent's, which gevent keeps
            # non-blocking: a read that would wait raises instead.
            self.inbuf = self.raw_socket._sock.recv(READ_CHUNK_BYTES)
        except BlockingIOError:
            return False
        except OSError:
            pass  # the read that follows meets it
        return True

    def park(self, then) -> None:
        """Wait for the client's next bytes with no greenlet at all.

        A greenlet blocked in a read keeps its saved C stack and its slice
        of the interpreter's data stack: about half of what an idle
        websocket costs (docs/benchmarks.md). Instead a read watcher in the
        loop starts ``then(self)`` in a greenlet once the client sends,
        closes, or the server shuts the connection down (``close``), and
        the reading greenlet returns. (Only while reading a frame does a
        reader wait in a greenlet.)
        """
        self.release()
        watcher = self.watcher
        if watcher is None:
            loop = gevent.get_hub().loop
            watcher = self.watcher = loop.io(self.raw_socket.fileno(), 1)
        watcher.start(self._readable, then)

    def _readable(self, then) -> None:
        """Runs in the hub: start the reader in a greenlet at once (one of
        ``chat.transport.workers``), as gevent's own read wake-ups switch to
        the waiting greenlet. It comes from the hub, so it owes the hub no
        yield (``receive``) yet."""
        self.watcher.stop()
        self.yielded_at = time.perf_counter()
        run_now(then, self)

    def finish(self) -> None:
        """Reading is over: the watcher goes, then ``on_end`` runs, once."""
        self.reader = None  # a bound method of the session: a cycle
        watcher = self.watcher
        if watcher is not None:
            self.watcher = None
            watcher.close()
        on_end = self.on_end
        if on_end is not None:
            self.on_end = None
            on_end()

    def holds_unread(self) -> bool:
        """Whether bytes the client sent are here and not yet read."""
        if self.inbuf:
            return True
        sock = self.raw_socket
        if self.closed or sock is None:
            return False
        sock.settimeout(0.0)
        try:
            return bool(sock.recv(1, socket.MSG_PEEK))
        except OSError:
            return False  # nothing waiting (BlockingIOError) or gone
        finally:
            sock.settimeout(None)

    def read_frame(self):
        """One frame; its size and the connection's budget checked before reading.

        A whole masked frame of under 126 bytes already in the buffer (what
        a client sends, read ahead by ``ready_to_read``) is decoded in place,
        as ``Header.decode_header`` would decode it, without its reads.
        """
        inbuf = self.inbuf
        if inbuf is not None and len(inbuf) >= 6:
            second = inbuf[1]
            length = second & 0x7F
            if second & 0x80 and length < 126 and len(inbuf) >= 6 + length:
                first = inbuf[0]
                fin = first & 0x80 == 0x80
                header = Header(fin, first & 0x0F, first & 0x70, length)
                header.mask = inbuf[2:6]
                self.inbuf = inbuf[6 + length :]
                if header.opcode > 0x07 and not header.fin:
                    raise ProtocolError("Received fragmented control frame")
                return self._checked(header, inbuf[6 : 6 + length])
        header = Header.decode_header(self)
        return self._checked(header, None)

    def _checked(self, header, payload: bytes | None):
        """The frame of ``header`` once its limits are checked; its payload
        read now when not given, and unmasked."""
        if header.flags:
            raise ProtocolError("reserved bits set")
        if header.length > self.limits.max_message_bytes:
            raise OverLimit(CLOSE_TOO_BIG, "frame_too_large")
        if not self.budget.spend(header.length):
            raise OverLimit(CLOSE_POLICY, "transport_rate")
        if not header.length:
            return header, b""
        if payload is None:
            payload = self.read(header.length)
            if len(payload) != header.length:
                raise WebSocketError("Unexpected EOF reading frame payload")
        if header.mask:
            payload = XorMaskerSimple(header.mask).process(payload)
        return header, payload

    def read_message(self):
        """The next text message; binary is refused, fragments are capped."""
        message = bytearray()
        started = False
        while True:
            header, payload = self.read_frame()
            opcode = header.opcode
            if opcode == self.OPCODE_BINARY:
                raise OverLimit(CLOSE_UNSUPPORTED, "binary_frame")
            if opcode == self.OPCODE_TEXT:
                if started:
                    raise ProtocolError("text frame inside a fragmented message")
                started = True
            elif opcode == self.OPCODE_CONTINUATION:
                if not started:
                    raise ProtocolError("continuation without a message")
            elif opcode == self.OPCODE_PING:
                self.handle_ping(header, payload)
                continue
            elif opcode == self.OPCODE_PONG:
                continue
            elif opcode == self.OPCODE_CLOSE:
                self.handle_close(header, payload)
                return None
            else:
                raise ProtocolError(f"unexpected opcode {opcode}")
            message += payload
            if len(message) > self.limits.max_message_bytes:
                raise OverLimit(CLOSE_TOO_BIG, "message_too_large")
            if header.fin:
                # bytes.decode validates UTF-8 in C; no per-byte Python.
                return message.decode("utf-8")

    def receive(self):
        """A message, or None once the connection is closed (for any reason).

        Yields to the hub once this reader has run ``YIELD_AFTER_S`` since it
        last did: a client whose frames keep arriving would otherwise never
        let another greenlet run, because a gevent read returns at once
        while the kernel holds data. Yielding before every message instead
        would cut the intake of busy senders under load.
        """
        if self.closed:
            return None
        self.release()
        now = time.perf_counter()
        if now - self.yielded_at > YIELD_AFTER_S:
            gevent.sleep(0)
            self.yielded_at = time.perf_counter()
        try:
            return self.read_message()
        except OverLimit as over:
            log.info("closing websocket (%d): %s", over.code, over.reason)
            self.close(over.code)
        except UnicodeError:
            self.close(CLOSE_INVALID_DATA)
        except ProtocolError:
            self.close(1002)
        except (OSError, WebSocketError):
            self.close()
        return None

    def close(self, code: int = 1000, message: bytes = b"") -> None:
        """Send a close frame that carries ``code``, then end the TCP connection.

        gevent-websocket's own ``close`` sends an empty close frame (the code
        never reaches the client) and leaves the socket open, so a reader
        blocked on a silent client would hold it until the idle timeout.
        The close frame goes after what is already in the backlog; the TCP
        connection ends once that is written, or ``ENDING_GRACE_S`` from now
        if a client that does not read keeps the flusher waiting.
        """
        if self.closed:
            return
        self.release()
        payload = struct.pack("!H", code) + (message or b"")
        self.send_now(encode_frame(payload, self.OPCODE_CLOSE))
        self.close_code = code
        self.closed = True
        self.stream = self.raw_write = self.raw_read = self.environ = None
        if self.flusher is None:
            self._shut_down()
        else:
            cut_off_after_grace(self)
