"""What one engine.io session may cost, checked before the work.

python-engineio gives every session an unbounded send queue, keeps sessions
that never connect a namespace until the ping window ends, and logs
attacker-chosen session ids at ERROR. ``ChatEngineIOServer`` fixes that,
and caps the sessions one client holds open.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import engineio
import gevent
from gevent.queue import JoinableQueue

from chat.internals.engineio_socket import ChatSocket
from chat.limits.clients import OpenCounts
from chat.observe import metrics
from chat.tasks import every
from chat.transport.clientaddr import client_address, client_key, parse_networks
from chat.transport.handler import adopt, close_when_session_ends
from chat.transport.query import query_with
from chat.transport.writer import cut_off_ended

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0
# Sessions engine.io's service pass looks at between two yields.
SERVICE_SLICE = 500


def close_session(eio, eio_sid: str, reconnect: bool = False) -> None:
    """Close a session without waiting for a polling client to fetch the news.

    ``eio.disconnect`` waits until a polling client reads the CLOSE packet,
    which blocks the request that asked for it and, on shutdown, every other.
    With ``reconnect`` the transport is dropped without a CLOSE packet: every
    socket.io client (JS, Python, Node) reconnects after a lost transport,
    while a CLOSE packet tells the Python client not to come back.
    """
    sock = eio.sockets.get(eio_sid)
    if sock is not None and not sock.closed:
        sock.close(wait=False, abort=reconnect, reason=eio.reason.SERVER_DISCONNECT)


def refuse_session(eio, eio_sid: str, reason: str, what: str) -> None:
    """Close a session over a limit: counted, logged once, no CLOSE packet."""
    metrics.REFUSED.labels(reason).inc()
    log.info("closing a session: %s", what, extra={"reason": reason})
    close_session(eio, eio_sid, reconnect=True)


@dataclass(frozen=True)
class SessionLimits:
    """Session settings of config.py (see the README's limits table)."""

    packets_per_s: float
    bytes_per_s: float
    max_packets_per_post: int
    max_sessions_per_ip: int
    connect_timeout_s: float
    queue_max_messages: int
    queue_max_bytes: int
    trusted_proxies: tuple
    route_id: str = ""
    ipv6_prefix: int = 64

    @classmethod
    def from_config(cls, config) -> SessionLimits:
        return cls(
            packets_per_s=config["TRANSPORT_PACKETS_PER_S"],
            bytes_per_s=config["TRANSPORT_BYTES_PER_S"],
            max_packets_per_post=config["MAX_PACKETS_PER_POST"],
            max_sessions_per_ip=config["MAX_SESSIONS_PER_IP"],
            connect_timeout_s=config["CONNECT_TIMEOUT_S"],
            queue_max_messages=config["SEND_QUEUE_MAX_MESSAGES"],
            queue_max_bytes=config["SEND_QUEUE_MAX_BYTES"],
            trusted_proxies=parse_networks(config["TRUSTED_PROXIES"]),
            route_id=config["ROUTE_ID"],
            ipv6_prefix=config["CLIENT_IPV6_PREFIX"],
        )


def _packet_bytes(item) -> int:
    data = getattr(item, "data", None)
    return len(data) if isinstance(data, (str, bytes)) else 16


_put = JoinableQueue.put


class BoundedSendQueue(JoinableQueue):
    """A session's outgoing packets, capped in count and bytes.

    Past the cap the queue drops what comes and reports itself once through
    ``on_overflow``; the session is then closed, and the client recovers what
    it missed from history when it reconnects. The close sentinel (None)
    always fits. Every delivery passes through ``put``, so a queue that a
    reading client keeps short costs one length check: bytes are added up
    from the ``count_bytes_from``-th queued packet on, incrementally while
    the queue only grows (a client that is not reading).
    """

    count_bytes_from = 32

    def __init__(self, max_messages: int, max_bytes: int, on_overflow) -> None:
        super().__init__()
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.overflowed = False
        self._on_overflow = on_overflow
        self._counted: tuple[int, int] | None = None  # (queued, bytes) after a put

    def _too_full(self, item) -> bool:
        queued = self.qsize()
        if queued >= self.max_messages:
            return True
        if self._counted is not None and self._counted[0] == queued:
            total = self._counted[1]
        else:  # something was sent since: count again
            total = sum(map(_packet_bytes, self.queue))
        total += _packet_bytes(item)
        self._counted = (queued + 1, total)
        return total > self.max_bytes

    def put(self, item, block=True, timeout=None):
        # The common case (a short queue) in as few steps as possible: this
        # runs once per delivery.
        if self.qsize() < self.count_bytes_from and not self.overflowed:
            self._counted = None
            return _put(self, item, block, timeout)
        if item is not None:
            if self.overflowed:
                return None
            if self._too_full(item):
                self.overflowed = True
                self._on_overflow(self)
                return None
        return _put(self, item, block, timeout)


def _plain(status: str, body: str, extra=()) -> tuple[str, list, list[bytes]]:
    headers = [("Content-Type", "text/plain; charset=utf-8"), *extra]
    return status, headers, [body.encode()]


class ChatEngineIOServer(engineio.Server):
    """engine.io with per-address session caps, connect deadlines, bounded queues."""

    limits: SessionLimits

    def setup_limits(self, limits: SessionLimits, sio) -> None:
        self.limits = limits
        self._sio = sio
        self._address_of: dict[str, str] = {}
        self._open_per_address = OpenCounts()
        self._connect_deadline: dict[str, float] = {}
        self._overflowed: list = []  # send queues and sockets
        self._sweeper = None

    def generate_id(self) -> str:
        """engine.io's random id, after ``ROUTE_ID.`` when one is set.

        Every request of a session after its handshake carries the id in
        ``?sid=``: a load balancer that maps the prefix to this instance
        keeps the session here, and spreads new sessions as it likes.
        """
        sid = super().generate_id()
        return f"{self.limits.route_id}.{sid}" if self.limits.route_id else sid

    # -- requests -----------------------------------------------------------
    def refusal(self, environ) -> tuple[str, list, list[bytes]] | None:
        """An answer for a socket.io request refused before engine.io works.

        Called by chat.web.guards' middleware rather than from an override of
        ``handle_request``: a wrapper frame there would sit under every
        websocket's waiting greenlet for its whole life (RSS per connection).
        """
        query = query_with(environ, "j", "sid")
        if "j" in query:
            return _plain("400 Bad Request", "JSONP polling is not supported")
        sid = query.get("sid", [None])[0]
        if sid is None:
            address = self.client_of(environ)
            cap = self.limits.max_sessions_per_ip
            if cap and self._open_per_address[address] >= cap:
                log.info("refusing a session: %d open from one address", cap)
                return _plain(
                    "429 Too Many Requests",
                    "Too many sessions from this address",
                    [("Retry-After", "5")],
                )
            return None
        sock = self.sockets.get(sid)
        if sock is None or sock.closed:
            # A stale poll after a close, or a made-up id: a clean 400, and
            # nothing the client chose goes into the log.
            return _plain("400 Bad Request", "Invalid session")
        if environ.get("REQUEST_METHOD") == "POST":
            return self._check_post_body(environ)
        return None

    def _check_post_body(self, environ):
        """Read a polling POST within its limits; the packets are counted first."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return _plain("411 Length Required", "Content-Length is required")
        if length < 0 or length > self.max_http_buffer_size:
            return _plain("413 Payload Too Large", "Payload too large")
        body = environ["wsgi.input"].read(length)
        if body.count(b"\x1e") >= self.limits.max_packets_per_post:
            return _plain("400 Bad Request", "Too many packets in one request")
        environ["wsgi.input"] = io.BytesIO(body)
        return None

    def client_of(self, environ) -> str:
        """The client a request counts as (chat.transport.clientaddr), noted in the
        environ: the session's event handlers budget by it too."""
        client = environ.get("chat.client")
        if client is None:
            address = client_address(environ, self.limits.trusted_proxies)
            client = environ["chat.client"] = client_key(
                address, self.limits.ipv6_prefix
            )
        return client

    # -- session life -------------------------------------------------------
    def _trigger_event(self, event, *args, **kwargs):
        if event == "connect":
            eio_sid, environ = args[0], args[1]
            address = self.client_of(environ)
            self._address_of[eio_sid] = address
            self._open_per_address.opened(address)
            self._connect_deadline[eio_sid] = (
                gevent.get_hub().loop.now() + self.limits.connect_timeout_s
            )
            sock = self.sockets.get(eio_sid)
            if sock is not None:
                # Before its first ping and first read (engineio_socket's docstring).
                sock.__class__ = ChatSocket
            adopt(eio_sid, environ)
            self._start_sweeper()
        elif event == "disconnect":
            self._forget(args[0])
            close_when_session_ends(args[0], gevent.get_hub().loop.now())
        return super()._trigger_event(event, *args, **kwargs)

    def _forget(self, eio_sid: str) -> None:
        self._connect_deadline.pop(eio_sid, None)
        address = self._address_of.pop(eio_sid, None)
        if address is not None:
            self._open_per_address.closed(address)

    def create_queue(self, *args, **kwargs):
        """Every session's send queue is bounded (engine.io calls this per socket)."""
        return BoundedSendQueue(
            self.limits.queue_max_messages,
            self.limits.queue_max_bytes,
            self._overflowed.append,
        )

    def note_overflow(self, sock) -> None:
        """A websocket's backlog is full: the sweeper closes its session."""
        self._overflowed.append(sock)

    def _service_task(self):
        """engine.io's watch over its sessions: one pass per ping timeout.

        engine.io spreads a pass over the ping timeout by waiting once per
        session between them: 500 wake-ups a second at 10,000 sessions, for
        nothing while they answer their pings. Each ``ChatSocket`` now ends
        itself when a pong is overdue (its own timer), so this is the safety
        net, and the sweep of closed sessions out of ``sockets``: one pass
        per ping timeout, yielding every ``SERVICE_SLICE`` sessions. It
        stops when engine.io's ``shutdown`` sets its event, as engine.io's.
        """
        self.service_task_event = self.create_event()
        while not self.service_task_event.wait(timeout=self.ping_timeout):
            try:
                sessions = list(self.sockets.values())
                for count, sock in enumerate(sessions, start=1):
                    if sock.closed:
                        if self.sockets.get(sock.sid) is sock:
                            del self.sockets[sock.sid]
                    elif not sock.closing:
                        sock.check_ping_timeout()
                    if count % SERVICE_SLICE == 0:
                        gevent.sleep(0)
            except Exception:
                log.exception("engine.io's service pass failed")

    def _start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = every(SWEEP_INTERVAL_S, self.sweep, "session sweep")

    def sweep(self) -> None:
        """Close sessions that never connected in time or stopped reading."""
        now = gevent.get_hub().loop.now()
        cut_off_ended(now)
        manager = self._sio.manager
        for eio_sid, deadline in list(self._connect_deadline.items()):
            # Connected to any namespace (the Admin UI uses /admin only).
            if any(
                manager.sid_from_eio_sid(eio_sid, namespace) is not None
                for namespace in manager.get_namespaces()
            ):
                del self._connect_deadline[eio_sid]
            elif now >= deadline:
                del self._connect_deadline[eio_sid]
                refuse_session(self, eio_sid, "connect_timeout", "never connected")
        if self._overflowed:
            full, self._overflowed = set(map(id, self._overflowed)), []
            for eio_sid, sock in list(self.sockets.items()):
                if id(sock) in full or id(sock.queue) in full:
                    refuse_session(self, eio_sid, "send_queue_full", "not reading")

    # -- what goes into logs and answers ------------------------------------
    def _log_error_once(self, message, message_key):
        # engine.io puts client input (session ids, origins) in these
        # messages; they are client errors, not ours: INFO, escaped, short.
        log.info("engine.io refused a request (%s): %r", message_key, message[:100])

    def _bad_request(self, message=None):
        if message and "session" in message.lower():
            message = "Invalid session"
        return super()._bad_request(message)
