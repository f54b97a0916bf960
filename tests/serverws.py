"""A server-side websocket (``LimitedWebSocket``) on one end of a socket
pair, for tests of its reading and writing without a server around it."""

from __future__ import annotations

import gevent.socket
from geventwebsocket.websocket import Stream

from chat import config as settings
from chat.transport.handler import TransportLimits
from chat.transport.websocket import LimitedWebSocket


class CountingNative:
    """The native socket under gevent's, noting each ``send``."""

    def __init__(self, sock, sends: list[bytes]) -> None:
        self.sock = sock
        self.sends = sends

    def send(self, data, flags=0):
        self.sends.append(bytes(data))
        return self.sock.send(data, flags)

    def __getattr__(self, name):
        return getattr(self.sock, name)


class CountingSocket:
    """The server's socket, noting each ``send`` (one system call each) on
    the native socket under it, where the ordered writer sends."""

    def __init__(self, sock) -> None:
        self.sock = sock
        self.sends: list[bytes] = []
        self._sock = CountingNative(sock._sock, self.sends)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def settings_dict() -> dict:
    """The test configuration as the settings dict ``from_config`` reads."""
    config = settings.TestConfig()
    return {name: getattr(config, name) for name in dir(config) if name.isupper()}


def server_websocket(overrides: dict | None = None):
    """A server websocket with the test limits (``overrides`` on top), the
    client's end of the pair, and what to close afterwards."""
    server, client = gevent.socket.socketpair()

    class Handler:
        socket = server
        rfile = server.makefile("rb")

    limits = TransportLimits.from_config({**settings_dict(), **(overrides or {})})
    websocket = LimitedWebSocket({}, Stream(Handler), Handler, limits)
    return websocket, client, [Handler.rfile, client, server]
