"""The WSGI server of one instance: gunicorn's pywsgi server with a cap on
connections per client address and in all, whose websockets outlive the
greenlet that accepted them."""

from __future__ import annotations

import contextlib
import logging
import sys

import gevent
from gunicorn.workers.ggevent import PyWSGIServer

from chat.limits.clients import OpenCounts
from chat.transport.clientaddr import client_key, in_networks
from chat.transport.workers import run_now
from chat.transport.writer import counts

log = logging.getLogger(__name__)

# How often a closing server looks whether its connections have ended.
CLOSING_POLL_S = 0.05

_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n" + (
    b"Retry-After: 5\r\nContent-Length: 0\r\n\r\n"
)


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


class ChatWSGIServer(PyWSGIServer):
    """gunicorn's pywsgi server, refusing a connection past the per-address cap.

    ``handle`` is re-implemented (it is two lines) rather than wrapped. A
    websocket's reading goes on past it: once its client has nothing more
    to send, the websocket is parked in the loop with no greenlet
    (``LimitedWebSocket.park``), ``handle`` returns, and the connection is
    closed and counted out by ``_Ending`` when its reading ends, in
    whichever greenlet that is. Connections are handled in reused worker
    greenlets (``do_handle``), so gevent's pool counts none of them:
    ``handle`` refuses past the pool's size itself. The counts are per
    process: one instance.
    """

    # Connections accepted per turn of the event loop (gevent's default:
    # 100). In a reconnect storm every accepted connection is a handshake
    # whose work runs before anything already waiting: accepting them in
    # smaller bites lets the users already chatting through between bites
    # (docs/benchmarks.md, "Reconnect storms").
    max_accept = 16

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.open_per_address = OpenCounts()
        # Sockets whose reading went on past ``handle`` (a parked websocket),
        # from ``handle``'s return to ``do_close`` right after it.
        self._handed_on: set = set()

    def close(self) -> None:
        """Stop accepting; keep one greenlet in the pool until every
        connection has ended and no drain runs.

        gunicorn's worker exits once its server's pool is empty (or its
        graceful timeout passes). A parked websocket, and the greenlet that
        reads it once its client sends, are in no pool: without this the
        worker would exit in the middle of a drain (``chat.lifecycle``),
        cutting off what it still answers.
        """
        super().close()
        pool = self.pool
        busy = counts.connections or counts.drains
        if busy and pool is not None and not pool.full():
            pool.spawn(_until_connections_end)

    def do_handle(self, *args) -> None:
        """Handle a connection just accepted in a waiting worker greenlet
        (chat.transport.workers), now.

        gevent spawns a new greenlet into its pool for each one, started on
        the loop's next turn: measured here, 23-28 µs a connection against
        2.4-2.8 µs handed to a waiting greenlet, and a churn cycle is one
        connection. The pool counted nothing this server relies on:
        ``handle`` refuses past its size, and ``close`` keeps it busy until
        every connection has ended. Runs in the hub, as gevent's does.
        """
        run_now(self._handle_and_close, args)

    def _handle_and_close(self, args) -> None:
        try:
            self._handle(*args)
        except BaseException:
            # As a spawned greenlet's failure: reported by the hub (a
            # system error goes on to the main greenlet), the server goes on.
            self.loop.handle_error((args[1:], self), *sys.exc_info())
        finally:
            self.do_close(*args)

    def do_close(self, sock, *args) -> None:
        """gevent closes a connection's socket when ``handle`` returns; a
        parked websocket's is closed by its ``on_end`` instead."""
        if sock in self._handed_on:
            self._handed_on.discard(sock)
            return
        super().do_close(sock, *args)

    def handle(self, sock, address):
        limits = self.handler_class.limits
        peer = address[0] if isinstance(address, tuple) else str(address or "")
        cap = limits.max_connections_per_ip
        counted = cap > 0 and not in_networks(peer, limits.trusted_proxies)
        peer = client_key(peer, limits.ipv6_prefix)
        if counted and self.open_per_address[peer] >= cap:
            log.info("refusing a connection: %d open from one address", cap)
            _refuse(sock)
            return
        # A parked websocket (chat.transport.websocket) holds no greenlet,
        # so no slot of the pool: the pool's size is the cap on connections.
        if self.pool is not None and counts.connections >= self.pool.size:
            log.info("refusing a connection: %d open", counts.connections)
            _refuse(sock)
            return
        if counted:
            self.open_per_address.opened(peer)
        counts.connections += 1
        ended = _Ending(self.open_per_address, sock, peer if counted else None)
        try:
            handler = self.handler_class(sock, address, self)
            handler.handle()
            websocket = handler.detached
        except BaseException:
            ended()
            raise
        if websocket is None:
            ended()
            return
        handler = None
        # The websocket's reader runs on, in this greenlet or in those its
        # parking starts; whichever ends it calls ``ended``.
        websocket.on_end = ended
        try:
            websocket.reader(websocket)
        except BaseException:
            websocket.finish()
            raise
        if websocket.on_end is not None:  # parked: not ended yet
            self._handed_on.add(sock)


def _until_connections_end() -> None:
    while counts.connections or counts.drains:
        gevent.sleep(CLOSING_POLL_S)


def _refuse(sock) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(_BUSY)
    sock.close()


class _Ending:
    """What ends with a connection: its socket closed, its counts taken back."""

    __slots__ = ("open_per_address", "sock", "peer")

    def __init__(self, open_per_address: OpenCounts, sock, peer: str | None) -> None:
        self.open_per_address = open_per_address
        self.sock = sock
        self.peer = peer

    def __call__(self) -> None:
        _close(self.sock)
        counts.connections -= 1
        if self.peer is not None:
            self.open_per_address.closed(self.peer)
