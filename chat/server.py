"""How the socket.io server is set up, started and drained.

Limits that protect the process (buffer size, ping timing, CORS) are set here
explicitly rather than left to library defaults.
"""

from __future__ import annotations

import logging

from flask import Flask

from chat import metrics, socketio
from chat.broker import ChatRedisManager

log = logging.getLogger(__name__)


def socketio_options(config, state) -> dict:
    """Keyword arguments for ``SocketIO.init_app`` from the config."""
    options = {
        "ping_interval": config.PING_INTERVAL_S,
        "ping_timeout": config.PING_TIMEOUT_S,
        "max_http_buffer_size": config.MAX_HTTP_BUFFER_BYTES,
        "cors_allowed_origins": config.CORS_ORIGINS,
        # The connect packet goes out before the connect handler runs, so a
        # login from the ``auth`` payload can answer with ``login`` at once.
        "always_connect": True,
        # One client's events are handled in the order it sent them.
        "async_handlers": False,
        "logger": False,
        "engineio_logger": False,
    }
    if config.REDIS_URL:
        options["client_manager"] = ChatRedisManager(
            config.REDIS_URL,
            channel=config.REDIS_CHANNEL,
            timeout_s=config.REDIS_TIMEOUT_S,
            on_publish_error=metrics.PUBLISH_FAILURES.inc,
        )
    return options


def announce_left(room: str, name: str, count: int) -> None:
    """Tell a room that a user of a dead instance has gone."""
    socketio.emit("user left", {"username": name, "numUsers": count}, to=room)


def start_services(app: Flask) -> None:
    """Start the presence heartbeat (a no-op on one instance)."""
    state = app.extensions["chat"]
    state.presence.start(announce_left, socketio.start_background_task, socketio.sleep)


def drain(app: Flask) -> None:
    """Close every connection of this instance and release its users.

    Called on SIGTERM (gunicorn.conf.py). Clients see a transport close and
    reconnect, through the load balancer, to a live instance.
    """
    state = app.extensions["chat"]
    state.draining = True
    # gunicorn's gevent worker closes its listeners on its next 1 s tick;
    # closing sockets after that means no client reconnects to this process.
    socketio.sleep(1.1)
    eio = socketio.server.eio
    log.info("draining: closing %d connections", len(eio.sockets))
    for eio_sid in list(eio.sockets):
        try:
            eio.disconnect(eio_sid)
        except Exception:  # a socket that is already closing
            log.debug("could not close %s", eio_sid, exc_info=True)
    with app.app_context():
        for member, count in state.presence.stop():
            announce_left(member.room, member.name, count)
