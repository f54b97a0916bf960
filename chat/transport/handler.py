"""The HTTP side of a connection: request headers and body within deadlines,
the websocket handshake after the app's guard, and the session a websocket
belongs to.

``ChatWebSocketHandler`` is gevent-websocket's handler with a header
deadline and frame limits; it lets a session read its websocket from the top
of the connection's greenlet once the WSGI call stack has unwound, and from
there park it with no greenlet at all while its client is quiet.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import weakref
from dataclasses import dataclass

import gevent
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import Stream
from gunicorn.workers.ggevent import PyWSGIHandler

from chat.transport.clientaddr import Network, parse_networks
from chat.transport.headers import parse_headers
from chat.transport.websocket import LimitedWebSocket
from chat.transport.writer import end_within_grace
from chat.web.guards import refusal_before_upgrade, session_id, with_safety_headers

log = logging.getLogger(__name__)

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


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

    # gunicorn's access line (ACCESS_LOG), not gevent-websocket's logger,
    # which nothing configures.
    log_request = PyWSGIHandler.log_request

    def get_environ(self):
        """pywsgi's environ, with the raw path gunicorn's access line reads."""
        environ = super().get_environ()
        environ["RAW_URI"] = self.path
        return environ

    def MessageClass(self, *args):  # noqa: N802 (pywsgi's name)
        """Request headers without the email parser (chat.transport.headers)."""
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
        # No socket timeout: gevent's sendall takes a much slower path for
        # every frame on a socket that has one. A session that ends closes
        # its socket instead (``close_when_session_ends``).
        sid = session_id(self.environ)
        self.websocket = LimitedWebSocket(self.environ, Stream(self), self, self.limits)
        if sid:  # an upgrade of a polling session
            by_session[sid] = self.websocket
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

    def _write_with_headers(self, data):
        """A handshake's 101 waits for the first frame and goes with it.

        pywsgi sends the response head on its own; a websocket's head is
        followed at once by engine.io's open packet, so it is held
        (``OrderedWriter.hold``) and both leave in one system call: before
        the websocket reads anything, the client may be waiting for it.
        The head is built as pywsgi builds it.
        """
        websocket = getattr(self, "websocket", None)
        if data or self.code != 101 or not isinstance(websocket, LimitedWebSocket):
            return super()._write_with_headers(data)
        self.headers_sent = True
        self.finalize_headers()
        head = bytearray(b"HTTP/1.1 ")
        head += self.status
        head += b"\r\n"
        for header, value in self.response_headers:
            head += header + b": " + value + b"\r\n"
        head += b"\r\n"
        websocket.hold(bytes(head))
        return None


_PLAIN_TEXT = [("Content-Type", "text/plain; charset=utf-8")]


class _NoBodyLeft:
    """What pywsgi discards after an answer when the body was given up on."""

    def _discard(self) -> None:
        return None


def _ignore_start_response(status, headers, exc_info=None):
    """The application's answer on an upgraded connection is not sent."""
    return None


# engine.io session id -> its websocket, while both exist.
by_session: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def adopt(eio_sid: str, environ: dict) -> None:
    """Remember the websocket of a session that started on one (no upgrade)."""
    websocket = environ.get("wsgi.websocket")
    if isinstance(websocket, LimitedWebSocket):
        by_session[eio_sid] = websocket


def close_when_session_ends(eio_sid: str, now: float) -> None:
    """The session ended: its websocket gets a moment to send the last
    packets, then is cut off if a client that does not read keeps it
    blocked in a send."""
    websocket = by_session.pop(eio_sid, None)
    if websocket is not None:
        end_within_grace(websocket, now)


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
