"""How an instance's socket.io server is set up, started and drained.

Limits that protect the process (buffer size, ping timing, CORS) are set here
explicitly rather than left to library defaults.
"""

from __future__ import annotations

import logging
import os
import time
import tomllib
from pathlib import Path

from flask import Flask

from chat.cluster.manager import ChatRedisManager
from chat.events.connection import name_lost
from chat.internals.emit import FastEmitManager
from chat.internals.engineio_server import close_session
from chat.internals.engineio_socket import ChatSocket
from chat.observe import gcpause, metrics
from chat.transport import codec, workers
from chat.transport.writer import counts
from chat.web.views import degraded_reason

log = logging.getLogger(__name__)


def socketio_options(config, state) -> dict:
    """Keyword arguments for ``SocketIO.init_app`` from the config."""
    options = {
        "ping_interval": config["PING_INTERVAL_S"],
        "ping_timeout": config["PING_TIMEOUT_S"],
        "max_http_buffer_size": config["MAX_HTTP_BUFFER_BYTES"],
        "cors_allowed_origins": config["CORS_ORIGINS"],
        # The connect packet goes out before the connect handler runs, so a
        # login from the ``auth`` payload can answer with ``login`` at once.
        "always_connect": True,
        # One client's events are handled in the order it sent them.
        "async_handlers": False,
        # Flask's session is never used (chat.web.app.NoSessions): no copy
        # of it kept per connection, nor looked after at every event.
        "manage_session": False,
        "json": codec,
        "logger": False,
        "engineio_logger": False,
    }
    if config["REDIS_URL"]:
        options["client_manager"] = ChatRedisManager(
            config["REDIS_URL"],
            channel=config["REDIS_CHANNEL"],
            timeout_s=config["REDIS_TIMEOUT_S"],
            fanout=state.fanout,
            on_publish_error=metrics.PUBLISH_FAILURES.inc,
            publish_queue_max=config["PUBLISH_QUEUE_MAX"],
            room_linger_s=config["ROOM_LINGER_S"],
            keys=state.keys,
        )
    else:
        options["client_manager"] = FastEmitManager()
    return options


def _version() -> str:
    """The project's version, from pyproject.toml."""
    path = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        return tomllib.loads(path.read_text())["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def log_start(app: Flask) -> None:
    """One line that maps this instance's id to a host, port and process."""
    config = app.config
    state = app.extensions["chat"]
    fields = {
        "instance": state.instance_id,
        "host": os.environ.get("HOST", "127.0.0.1"),
        "port": os.environ.get("PORT", "5050"),
        "pid": os.getpid(),
        "release": config["RELEASE"],
        "mode": "cluster" if config["REDIS_URL"] else "single",
    }
    log.info(
        "instance %s started", state.instance_id, extra={**fields, "event": "start"}
    )


def _watch(app: Flask, socketio) -> None:
    """Gauges read the state itself: a reclaimed name or a dropped transport
    can never make them drift."""
    state = app.extensions["chat"]
    server = socketio.server
    # python-socketio keeps every connected sid in the room ``None``.
    metrics.SOCKETS.set_function(
        lambda: len(server.manager.rooms.get("/", {}).get(None, ()))
    )
    metrics.USERS.set_function(lambda: len(state.presence.local))
    metrics.LOGINS_WAITING.set_function(lambda: state.admission.waiting)
    metrics.CONNECTIONS.set_function(lambda: counts.connections)
    metrics.FLUSHERS.set_function(lambda: counts.flushers)
    metrics.WORKERS.labels("idle").set_function(workers.idle_workers)
    metrics.WORKERS.labels("started").set_function(lambda: workers.started)
    metrics.SESSIONS.set_function(lambda: len(server.eio.sockets))
    metrics.DEGRADED.set_function(
        lambda: 1 if degraded_reason(state, server.manager) else 0
    )
    metrics.BUILD.info({"release": app.config["RELEASE"], "version": _version()})
    gcpause.watch()
    if app.config["REDIS_URL"]:
        metrics.ROOMS_KEPT.labels("channel").set_function(
            server.manager.subscribed_rooms
        )
        metrics.ROOMS_KEPT.labels("delivery").set_function(state.delivered.rooms)
        metrics.ROOMS_KEPT.labels("counts").set_function(state.counts.rooms)
        metrics.ROOMS_KEPT.labels("tail").set_function(state.tails.rooms)


def start_services(app: Flask, socketio) -> None:
    """Subscribe to the message queue and start the presence heartbeat now.

    python-socketio starts its Redis listener on the first connection; until
    then this instance would miss what others publish and /healthz could not
    tell whether Redis works.
    """
    state = app.extensions["chat"]
    server = socketio.server
    fanout = state.fanout
    _watch(app, socketio)
    state.outbox.on_stored = fanout.stored
    state.presence.on_name_lost = lambda member: name_lost(app, socketio, member)
    if app.config["REDIS_URL"] and not server.manager_initialized:

        def back(gap_started_ms: int) -> None:
            # Presence first (it marks the instance ready), then the replay.
            state.presence.beat(fanout.presence)
            fanout.replay(gap_started_ms)

        # An instance that went away may have taken publishes with it; the
        # streams have its messages.
        state.presence.on_instance_gone = fanout.instance_gone
        # Presence stays "degraded" from a lost subscription until a heartbeat
        # has written this instance's users back; that beat runs at once.
        server.manager.on_lost = state.presence.mark_degraded
        server.manager.on_back = back
        server.manager_initialized = True
        server.manager.initialize()
    state.presence.start(
        fanout.presence, socketio.start_background_task, socketio.sleep
    )
    if app.config["LOG_SESSIONS_EVERY_S"] > 0:
        socketio.start_background_task(
            state.tally.run, app.config["LOG_SESSIONS_EVERY_S"], socketio.sleep
        )


def end_sessions(eio, within_s: float, sleep) -> None:
    """End every session, each between two of its events, within ``within_s``.

    A session that is handling an event, or whose next frames are already
    here, ends once they are answered (``ChatSocket.end``); whatever is
    still open at the deadline is closed as it stands.
    """
    for eio_sid in list(eio.sockets):
        sock = eio.sockets.get(eio_sid)
        if isinstance(sock, ChatSocket):
            sock.end()
        else:
            close_session(eio, eio_sid, reconnect=True)
    deadline = time.monotonic() + within_s
    while any(not sock.closed for sock in eio.sockets.values()):
        if time.monotonic() >= deadline:
            log.info("draining: %d sessions still busy, closed", len(eio.sockets))
            break
        sleep(0.01)
    for eio_sid in list(eio.sockets):
        close_session(eio, eio_sid, reconnect=True)


def drain(app: Flask) -> None:
    """Close every connection of this instance and release its users.

    Called on SIGTERM (gunicorn.conf.py). Clients see a transport close and
    reconnect, through the load balancer, to a live instance.
    """
    state = app.extensions["chat"]
    if state.draining:
        return  # Ctrl-C reaches the worker twice: from the terminal and the master
    state.draining = True
    counts.drains += 1  # the server's close waits for it (chat.transport.server)
    try:
        _drain(app, state)
    finally:
        counts.drains -= 1


def _drain(app: Flask, state) -> None:
    announce = state.fanout.presence
    socketio = app.extensions["socketio"]
    grace_s = app.config["PRESENCE_GRACE_S"]
    # Quiet: with other instances to take the users over, nobody is
    # announced as left now; those who do not come back within the grace
    # are, once, by another instance.
    quiet = grace_s > 0 and app.config["REDIS_URL"]
    if quiet:
        with app.app_context():
            for member, count, seq in state.presence.hand_over(grace_s):
                announce("user left", member.room, member.name, count, seq)
    eio = socketio.server.eio
    log.info("draining: closing %d connections", len(eio.sockets))
    end_sessions(eio, app.config["DRAIN_EVENTS_S"], socketio.sleep)
    if quiet:
        return
    with app.app_context():
        for member, count, seq in state.presence.stop():
            announce("user left", member.room, member.name, count, seq)
