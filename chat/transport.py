"""What one TCP connection or websocket may cost, checked before the work.

gevent-websocket 0.10.1 reads a frame of any declared length, joins
continuation frames without a cap, unmasks byte by byte in Python, and never
yields while the kernel holds more data, so one client can freeze or bloat
the process before engine.io's ``max_http_buffer_size`` is ever looked at.
``LimitedWebSocket`` checks every frame header first (size, opcode, budget),
caps a fragmented message as it grows, unmasks with wsaccel's C code and
yields after a few milliseconds of work. It also writes: frames go out in
order from whichever greenlet sends them, without ever blocking it, through
a bounded backlog (``LimitedWebSocket.write``). ``ChatWebSocketHandler``
bounds the HTTP side (request headers within a deadline) and lets a session
read its websocket from the top of the connection's greenlet once the WSGI
call stack has unwound; a websocket whose session ended is closed at the
TCP level; ``ChatWSGIServer`` caps connections per address.

Written against gevent 26.9.0, gevent-websocket 0.10.1 and wsaccel 0.6.7
(``PINNED``; requirements.txt pins the same). tests/test_internals.py fails
when an upgrade moves what this module relies on.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import io
import logging
import socket
import struct
import time
import urllib.parse
import weakref
from dataclasses import dataclass

import gevent
from geventwebsocket.exceptions import ProtocolError, WebSocketError
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import Header, Stream, WebSocket
from gunicorn.workers.ggevent import PyWSGIServer
from wsaccel.xormask import XorMaskerSimple

from chat.clientaddr import Network, client_key, in_networks, parse_networks
from chat.guards import refusal_before_upgrade, with_safety_headers
from chat.headers import parse_headers

log = logging.getLogger(__name__)

PINNED = {"gevent": "26.9.0", "gevent-websocket": "0.10.1", "wsaccel": "0.6.7"}

# RFC 6455 close codes.
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009

# Longest a websocket's reader runs before it lets others run.
YIELD_AFTER_S = 0.002
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n" + (
    b"Retry-After: 5\r\nContent-Length: 0\r\n\r\n"
)


class Counts:
    """What this process holds, for /metrics (one instance per process)."""

    __slots__ = ("connections", "flushers")

    def __init__(self) -> None:
        self.connections = 0
        self.flushers = 0


counts = Counts()


@dataclass(frozen=True)
class TransportLimits:
    """The transport settings of config.py, in the units this module uses."""

    max_message_bytes: int
    packets_per_s: float
    bytes_per_s: float
    header_timeout_s: float
    max_connections_per_ip: int
    trusted_proxies: tuple[Network, ...] = ()
    body_timeout_s: float = 5.0
    ipv6_prefix: int = 64
    backlog_messages: int = 1000
    backlog_bytes: int = 1024 * 1024

    @classmethod
    def from_config(cls, config) -> TransportLimits:
        return cls(
            max_message_bytes=config["MAX_HTTP_BUFFER_BYTES"],
            packets_per_s=config["TRANSPORT_PACKETS_PER_S"],
            bytes_per_s=config["TRANSPORT_BYTES_PER_S"],
            header_timeout_s=config["REQUEST_HEADER_TIMEOUT_S"],
            body_timeout_s=config["REQUEST_BODY_TIMEOUT_S"],
            max_connections_per_ip=config["MAX_CONNECTIONS_PER_IP"],
            trusted_proxies=parse_networks(config["TRUSTED_PROXIES"]),
            ipv6_prefix=config["CLIENT_IPV6_PREFIX"],
            backlog_messages=config["SEND_QUEUE_MAX_MESSAGES"],
            backlog_bytes=config["SEND_QUEUE_MAX_BYTES"],
        )


class Budget:
    """Two token buckets, packets and bytes, with a burst of two seconds' worth."""

    __slots__ = ("_packets", "_bytes", "_per_s", "_bytes_per_s", "_last")

    def __init__(self, packets_per_s: float, bytes_per_s: float) -> None:
        self._per_s = packets_per_s
        self._bytes_per_s = bytes_per_s
        self._packets = 2 * packets_per_s
        self._bytes = 2 * bytes_per_s
        self._last = time.monotonic()

    def spend(self, nbytes: int) -> bool:
        """Take one packet and ``nbytes``; False when either bucket is empty."""
        now = time.monotonic()
        elapsed, self._last = now - self._last, now
        self._packets = min(2 * self._per_s, self._packets + elapsed * self._per_s)
        self._bytes = min(
            2 * self._bytes_per_s, self._bytes + elapsed * self._bytes_per_s
        )
        if self._packets < 1 or self._bytes < nbytes:
            return False
        self._packets -= 1
        self._bytes -= nbytes
        return True


class Refusal(WebSocketError):
    """A frame over a limit: the connection is closed with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class LimitedWebSocket(WebSocket):
    """gevent-websocket's WebSocket with every limit checked on the header,
    and an ordered writer that never blocks the greenlet that sends.

    Writing: a frame goes straight to the kernel with a non-blocking send
    from whichever greenlet emits. What the kernel does not take (a client
    reading slowly, a burst larger than the socket buffer) goes to a
    backlog that one short-lived flusher greenlet drains in order; while it
    is not empty every later frame queues behind it, so frames never
    interleave. The backlog is bounded (``backlog_messages``/``_bytes``): past
    it the frame is dropped and ``on_overflow`` is told once, so the session
    can be closed. Every frame this class sends, close and pong included,
    takes this one path.
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
        "reader",
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
        self.close_code: int | None = None  # of the close frame this side sent
        # Set by the session that reads this websocket from the top of the
        # connection's greenlet (``ChatWebSocketHandler.run_websocket``):
        # called with the websocket. A bound method, not a partial: a call
        # through C code would add a C-level frame to the stack that every
        # waiting connection keeps a copy of.
        self.reader = None
        # Bytes read from the socket and not yet parsed, once the websocket
        # reads its socket itself (``read_socket_directly``); before that it
        # reads through the HTTP handler's buffered reader.
        self.inbuf: bytes | None = None

    # -- writing --------------------------------------------------------------
    def write(self, frame: bytes) -> bool:
        """Send one encoded frame in order, without blocking; False if dropped."""
        if self.closed:
            return False
        return self._write(frame)

    def _write(self, frame) -> bool:
        if self.shut_down:
            return False
        if self.flusher is None:
            try:
                # gevent's send with timeout 0.0 raises instead of waiting.
                sent = self.raw_socket.send(frame, 0, 0.0)
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

    def send_frame(self, message, opcode):
        """gevent-websocket's frame, written through the ordered writer."""
        if self.closed:
            raise WebSocketError("Connection is already closed")
        if isinstance(message, str):
            message = message.encode("utf-8")
        elif not isinstance(message, (bytes, bytearray)):
            message = str(message).encode("utf-8")
        self._write(frame_of(message, opcode))

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

    def read_frame(self):
        """One frame; its size and the connection's budget checked before reading."""
        header = Header.decode_header(self)
        if header.flags:
            raise ProtocolError("reserved bits set")
        if header.length > self.limits.max_message_bytes:
            raise Refusal(CLOSE_TOO_BIG, "frame_too_large")
        if not self.budget.spend(header.length):
            raise Refusal(CLOSE_POLICY, "transport_rate")
        if not header.length:
            return header, b""
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
                raise Refusal(CLOSE_UNSUPPORTED, "binary_frame")
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
                raise Refusal(CLOSE_TOO_BIG, "message_too_large")
            if header.fin:
                # bytes.decode validates UTF-8 in C; no per-byte Python.
                return message.decode("utf-8")

    def receive(self):
        """A message, or None once the connection is closed (for any reason).

        Yields to the hub once this reader has run ``YIELD_AFTER_S`` since it
        last did: a client whose frames keep arriving would otherwise never
        let another greenlet run, because a gevent read returns at once
        while the kernel holds data. Yielding before every message instead
        halved the intake of busy senders under load (measured).
        """
        if self.closed:
            return None
        now = time.perf_counter()
        if now - self.yielded_at > YIELD_AFTER_S:
            gevent.sleep(0)
            self.yielded_at = time.perf_counter()
        try:
            return self.read_message()
        except Refusal as refusal:
            log.info("closing websocket (%d): %s", refusal.code, refusal.reason)
            self.close(refusal.code)
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
        payload = struct.pack("!H", code) + (message or b"")
        self._write(frame_of(payload, self.OPCODE_CLOSE))
        self.close_code = code
        self.closed = True
        self.stream = self.raw_write = self.raw_read = self.environ = None
        if self.flusher is None:
            self._shut_down()
        else:
            _ending[self] = gevent.get_hub().loop.now() + ENDING_GRACE_S

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


def frame_of(payload: bytes, opcode: int = WebSocket.OPCODE_TEXT) -> bytes:
    """One unmasked, unfragmented server frame."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, length)
    elif length <= 0xFFFF:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return header + payload


class ChatWebSocketHandler(WebSocketHandler):
    """gevent-websocket's handler with a header deadline and frame limits.

    ``limits`` is set on a subclass by ``handler_class``.
    """

    limits: TransportLimits
    read_buffer_bytes = 1024
    # A websocket whose reading continues in ``ChatWSGIServer.handle``.
    detached: LimitedWebSocket | None = None

    def __init__(self, sock, address, server, *args, **kwargs):
        super().__init__(sock, address, server, *args, **kwargs)
        # The read buffer is the largest allocation of an idle websocket;
        # chat frames are small (docs/benchmarks.md).
        self.rfile = sock.makefile("rb", self.read_buffer_bytes)
        self._header_timer = None

    # -- request headers within a deadline ----------------------------------
    def read_requestline(self):
        """Start the header deadline; it also bounds an idle keep-alive wait."""
        self._header_timer = gevent.Timeout.start_new(self.limits.header_timeout_s)
        try:
            line = super().read_requestline()
        except gevent.Timeout as timeout:
            if timeout is not self._header_timer:
                raise
            return None
        if not line:
            self._header_timer.cancel()
            self._header_timer = None
        return line

    def MessageClass(self, *args):  # noqa: N802 (pywsgi's name)
        """Request headers without the email parser (chat.headers)."""
        return parse_headers(*args)

    def read_request(self, raw_requestline):
        """Read the headers; a slow sender gets a 400 when the deadline passes."""
        try:
            return super().read_request(raw_requestline)
        except gevent.Timeout as timeout:
            if timeout is not self._header_timer:
                raise
            raise ValueError("request headers took too long") from None
        finally:
            self._header_timer.cancel()
            self._header_timer = None

    # -- a request body within a deadline ----------------------------------
    def run_application(self):
        """Read a request's body within REQUEST_BODY_TIMEOUT_S before the
        application sees it: a client sending one byte a second would
        otherwise hold a greenlet and a connection for as long as it likes.
        A body longer than engine.io accepts is left to engine.io, which
        refuses it by its length without reading it."""
        length = self.environ.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in self.environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        limit = self.limits.max_message_bytes + 1
        wanted = int(length) if length.isdigit() else (limit if chunked else 0)
        if 0 < wanted <= limit and not self._read_body_in_time(wanted):
            return None
        return super().run_application()

    def _read_body_in_time(self, wanted: int) -> bool:
        try:
            with gevent.Timeout(self.limits.body_timeout_s):
                body = self.wsgi_input.read(wanted)
        except gevent.Timeout:
            log.info("closed a request whose body took too long")
            # pywsgi would read the rest of the body after the answer.
            self.wsgi_input = _NoBodyLeft()
            self.close_connection = True
            self.start_response(
                "408 Request Timeout", [*_PLAIN_TEXT, ("Connection", "close")]
            )
            self.result = [b"the request body took too long"]
            self.process_result()
            return False
        self.environ["wsgi.input"] = io.BytesIO(body)
        return True

    # -- the websocket -------------------------------------------------------
    def run_websocket(self):
        """Run the application on the websocket; let it go on reading higher up.

        A session that sets ``websocket.reader`` returns from the
        application at once; the connection then stays open and the reader
        runs from the top of this greenlet (``ChatWSGIServer.handle``), so
        an idle websocket does not keep the whole WSGI, Flask and engine.io
        call stack alive while it waits. gevent-websocket's own version also
        registers every client in ``server.clients``, which nothing here
        reads.
        """
        websocket = self.websocket
        try:
            list(self.application(self.environ, _ignore_start_response))
        finally:
            self.websocket = None
            self.environ["wsgi.websocket"] = None
            if websocket.reader is not None and not websocket.closed:
                self.detached = websocket
                # pywsgi must neither read another request from this
                # connection nor close it when this handler returns.
                self.close_connection = True
                self.socket = None
                # The websocket needs nothing else of the HTTP request: the
                # handler, its buffered reader, headers and environ can go.
                websocket.read_socket_directly(self.rfile)
                websocket.handler = websocket.environ = None
            elif not websocket.closed:
                websocket.close()

    def upgrade_websocket(self):
        """Ask the app's guard first: a refusal (draining, busy, a session
        cap, an unknown host) is answered as plain HTTP, before any 101."""
        if self.environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            refused = refusal_before_upgrade(self.application, self.environ)
            if refused is not None:
                status, headers, body = refused
                self.close_connection = True
                self.start_response(status, with_safety_headers(headers))
                return body
        return super().upgrade_websocket()

    def upgrade_connection(self):
        """RFC 6455 handshake, answered with a ``LimitedWebSocket``."""
        version = self.environ.get("HTTP_SEC_WEBSOCKET_VERSION")
        if version not in self.SUPPORTED_VERSIONS:
            self.start_response(
                "400 Bad Request",
                [("Sec-WebSocket-Version", ", ".join(self.SUPPORTED_VERSIONS))],
            )
            return [b"Unsupported WebSocket version"]
        key = self.environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
        try:
            valid_key = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            valid_key = False
        if not valid_key:
            self.start_response("400 Bad Request", [])
            return [b"Invalid Sec-WebSocket-Key"]
        # No socket timeout: gevent's sendall takes a slower path for every
        # frame on a socket that has one (measured: p50 at 320 messages/s
        # 92 -> 800 ms). A session that ends closes its socket instead
        # (``close_when_session_ends``).
        sid = urllib.parse.parse_qs(self.environ.get("QUERY_STRING", "")).get("sid")
        self.websocket = LimitedWebSocket(self.environ, Stream(self), self, self.limits)
        if sid:  # an upgrade of a polling session
            by_session[sid[0]] = self.websocket
        self.environ.update(
            {"wsgi.websocket_version": version, "wsgi.websocket": self.websocket}
        )
        accept = base64.b64encode(
            hashlib.sha1((key + _GUID).encode("latin-1")).digest()
        ).decode("latin-1")
        self.start_response(
            "101 Switching Protocols",
            [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", accept),
            ],
        )
        return None


_PLAIN_TEXT = [("Content-Type", "text/plain; charset=utf-8")]


class _NoBodyLeft:
    """What pywsgi discards after an answer when the body was given up on."""

    def _discard(self) -> None:
        return None


def _close(sock) -> None:
    """Close a connection's descriptor now, as pywsgi does after a request.

    ``sock.close()`` alone waits for the buffered reader made from it to be
    collected (gevent counts its io references); pywsgi closes the native
    socket underneath, and so does this.
    """
    native = getattr(sock, "_sock", None)
    with contextlib.suppress(OSError):
        if native is not None:
            native.close()
        sock.close()


def _ignore_start_response(status, headers, exc_info=None):
    """The application's answer on an upgraded connection is not sent."""
    return None


# engine.io session id -> its websocket, while both exist.
by_session: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
# Websockets whose session ended, and when to cut them off if still open.
_ending: dict = {}
ENDING_GRACE_S = 2.0


def adopt(eio_sid: str, environ: dict) -> None:
    """Remember the websocket of a session that started on one (no upgrade)."""
    websocket = environ.get("wsgi.websocket")
    if isinstance(websocket, LimitedWebSocket):
        by_session[eio_sid] = websocket


def close_when_session_ends(eio_sid: str, now: float) -> None:
    """The session ended: its websocket gets a moment to send the last
    packets, then is cut off (``cut_off_ended``) if a client that does not
    read keeps it blocked in a send."""
    websocket = by_session.pop(eio_sid, None)
    if websocket is not None and not websocket.shut_down:
        _ending.setdefault(websocket, now + ENDING_GRACE_S)


def cut_off_ended(now: float) -> None:
    """Shut down the TCP connection of ended sessions past their grace."""
    for websocket, deadline in list(_ending.items()):
        if websocket.shut_down:
            del _ending[websocket]
        elif now >= deadline:
            del _ending[websocket]
            websocket._shut_down()


def handler_class(config) -> type[ChatWebSocketHandler]:
    """A handler class bound to ``config``'s limits (gunicorn.conf.py uses it)."""
    return type(
        "ConfiguredChatWebSocketHandler",
        (ChatWebSocketHandler,),
        {
            "limits": TransportLimits.from_config(config),
            "read_buffer_bytes": config["READ_BUFFER_BYTES"],
        },
    )


class ChatWSGIServer(PyWSGIServer):
    """gunicorn's pywsgi server, refusing a connection past the per-address cap.

    ``handle`` is re-implemented (it is two lines) rather than wrapped:
    every Python frame under a waiting greenlet costs RSS per connection
    (measured: one trivial wrapper around the handler's ``handle``, +3.6 kB
    per held websocket). The counts are per process: one instance.
    """

    # Connections accepted per turn of the event loop (gevent's default:
    # 100). In a reconnect storm every accepted connection is a handshake
    # whose work runs before anything already waiting: accepting them in
    # smaller bites lets the users already chatting through between bites.
    # Measured (2,500 users back at once on one instance): unaffected
    # users' p99 271-460 ms at 100, about 135 ms at 16, 91-147 ms at 4 with
    # recovery 10 % slower; 16 keeps recovery where it was.
    max_accept = 16

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.open_per_address: collections.Counter = collections.Counter()

    def handle(self, sock, address):
        limits = self.handler_class.limits
        peer = address[0] if isinstance(address, tuple) else str(address or "")
        cap = limits.max_connections_per_ip
        counted = cap > 0 and not in_networks(peer, limits.trusted_proxies)
        peer = client_key(peer, limits.ipv6_prefix)
        if counted and self.open_per_address[peer] >= cap:
            log.info("refusing a connection: %d open from one address", cap)
            with contextlib.suppress(OSError):
                sock.sendall(_BUSY)
            sock.close()
            return
        if counted:
            self.open_per_address[peer] += 1
        counts.connections += 1
        try:
            handler = self.handler_class(sock, address, self)
            handler.handle()
            websocket = handler.detached
            if websocket is not None:
                handler = None
                try:
                    websocket.reader(websocket)
                finally:
                    websocket.reader = None
                    _close(sock)
        finally:
            counts.connections -= 1
            if counted:
                self.open_per_address[peer] -= 1
                if self.open_per_address[peer] <= 0:
                    del self.open_per_address[peer]
