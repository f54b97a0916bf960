"""Fails loudly when an upgrade moves the library internals chat/ relies on.

chat/transport.py and chat/sessions.py subclass gevent-websocket,
python-engineio and python-socketio classes and override private methods;
a new version may rename them and leave the app silently unguarded.
"""

from importlib.metadata import version

import engineio
import pytest
import socketio
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import Header, WebSocket
from gunicorn.workers.ggevent import PyWSGIServer

from chat import sessions, transport
from chat import socketio as chat_socketio

PINNED = {**transport.PINNED, **sessions.PINNED}


@pytest.mark.parametrize(("package", "pinned"), sorted(PINNED.items()))
def test_installed_versions_are_the_ones_the_guards_were_written_for(package, pinned):
    assert version(package) == pinned, (
        f"{package} {version(package)} is installed; chat/transport.py and "
        f"chat/sessions.py were written for {pinned}: re-check their overrides"
    )


@pytest.mark.parametrize(
    ("cls", "names"),
    [
        (
            WebSocket,
            [
                "read_frame",
                "read_message",
                "receive",
                "send_frame",
                "handle_ping",
                "handle_close",
                "OPCODE_CONTINUATION",
            ],
        ),
        (Header, ["decode_header", "mask", "length", "fin", "opcode", "flags"]),
        (
            WebSocketHandler,
            [
                "upgrade_connection",
                "run_websocket",
                "read_requestline",
                "read_request",
                "SUPPORTED_VERSIONS",
            ],
        ),
        (
            engineio.Server,
            [
                "create_queue",
                "_trigger_event",
                "_log_error_once",
                "_bad_request",
                "sockets",
            ],
        ),
        (
            socketio.Server,
            [
                "_handle_eio_message",
                "_handle_event",
                "_send_packet",
                "_handle_eio_connect",
                "_handle_eio_disconnect",
            ],
        ),
        (PyWSGIServer, ["handle", "handler_class"]),
    ],
)
def test_overridden_internals_still_exist(cls, names):
    missing = [
        n
        for n in names
        if not hasattr(cls, n) and n not in cls.__init__.__code__.co_names
    ]
    assert missing == []


def test_websocket_keeps_the_slots_the_limited_socket_extends():
    assert {"stream", "raw_read", "raw_write", "closed", "handler"} <= set(
        WebSocket.__slots__
    )


def test_install_puts_the_guards_on_flask_socketios_server(app):
    server = chat_socketio.server
    assert type(server) is sessions.ChatSocketIOServer
    assert type(server.eio) is sessions.ChatEngineIOServer
    handler = server.eio.handlers["message"]
    assert handler.__func__ is sessions.ChatSocketIOServer._handle_eio_message
    assert isinstance(server.eio.create_queue(), sessions.BoundedSendQueue)
