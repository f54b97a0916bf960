"""The WSGI server of one instance: gunicorn's pywsgi server with a cap on
connections per client address."""

from __future__ import annotations

import contextlib
import logging

from gunicorn.workers.ggevent import PyWSGIServer

from chat.limits.clients import OpenCounts
from chat.transport.clientaddr import client_key, in_networks
from chat.transport.writer import counts

log = logging.getLogger(__name__)

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

    ``handle`` is re-implemented (it is two lines) rather than wrapped:
    every Python frame under a waiting greenlet costs RSS per connection
    (docs/benchmarks.md). The counts are per process: one instance.
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
            self.open_per_address.opened(peer)
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
                self.open_per_address.closed(peer)
