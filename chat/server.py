"""How the socket.io server is set up, started and drained.

Limits that protect the process (buffer size, ping timing, CORS) are set here
explicitly rather than left to library defaults.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import tomllib
from pathlib import Path

from flask import Flask

from chat import codec, metrics, socketio, transport
from chat.broker import ChatRedisManager
from chat.fastpath import FastEmitManager
from chat.history import public
from chat.presence import presence_event
from chat.sessions import close_session

log = logging.getLogger(__name__)


def socketio_options(config) -> dict:
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
        "json": codec,
        "logger": False,
        "engineio_logger": False,
    }
    if config.REDIS_URL:
        options["client_manager"] = ChatRedisManager(
            config.REDIS_URL,
            channel=config.REDIS_CHANNEL,
            timeout_s=config.REDIS_TIMEOUT_S,
            on_publish_error=metrics.PUBLISH_FAILURES.inc,
            publish_queue_max=config.PUBLISH_QUEUE_MAX,
            room_linger_s=config.ROOM_LINGER_S,
        )
    else:
        options["client_manager"] = FastEmitManager()
    return options


def announce(event: str, room: str, name: str, count: int, seq=None) -> None:
    """Tell everyone in ``room`` that a user joined or left."""
    socketio.emit(event, presence_event(name, count, seq), to=room)


# A message published this long before the subscription broke may still
# have been in flight; the replay starts that far back and skips what this
# instance already delivered.
REPLAY_SLACK_MS = 5000


def replay_missed(state, gap_started_ms: int) -> None:
    """Deliver, from the streams, what this instance may have missed.

    After a lost subscription, or when another instance went away. Ids
    already delivered here, and those a login's history had, are skipped.
    """
    # Publishes were lost: the messages kept per room may lack them.
    state.recent.clear()
    since = f"{gap_started_ms - REPLAY_SLACK_MS}-0"
    delivered = 0
    for room in {m.room for m in list(state.presence.local.values())}:
        for entry in state.history.after(room, since, state.replay_limit):
            if state.messages.holds(room, entry):
                continue  # this instance's outbox announces it itself
            if state.delivery.first_time(room, entry):
                skip = state.delivery.already_sent(room, entry["id"])
                socketio.emit(
                    "new message",
                    public(entry),
                    to=room,
                    skip_sid=skip,
                    ignore_queue=True,
                )
                delivered += 1
    if delivered:
        log.warning("replayed %d messages from the streams", delivered)


def announce_stored(
    state, room: str, entry: dict, pending: dict, sender_sid: str
) -> None:
    """An outbox message now has its id: tell the others, and who saw it pending.

    This instance's users who were in the room when it was accepted saw it
    (pending): its id is marked delivered here first, so the emit reaches
    the other instances, and they get ``message stored`` naming its
    ``pendingId``. The sender's session alone gets its clientId back. Users
    who logged in here since never saw it: they get the message itself.
    """
    state.delivery.first_time(room, entry)
    shown = public(entry)
    socketio.emit("new message", shown, to=room, skip_sid=sender_sid)
    stored = {"pendingId": pending["pendingId"], "id": entry["id"], "ts": entry["ts"]}
    late = set(state.delivery.logged_in_since(room, pending["ts"]))
    socketio.emit(
        "message stored",
        stored,
        to=room,
        skip_sid=[*late, sender_sid],
        ignore_queue=True,
    )
    own = {**stored, "clientId": pending["clientId"]}
    socketio.emit("message stored", own, to=sender_sid, ignore_queue=True)
    late -= {sender_sid, *state.delivery.already_sent(room, entry["id"])}
    for sid in late:
        socketio.emit("new message", shown, to=sid, ignore_queue=True)


def degraded_reason(state) -> str | None:
    """Why this instance cannot serve the whole cluster now, or None."""
    reason = state.presence.degraded_reason
    manager = socketio.server.manager
    if reason is None and getattr(manager, "listening", True) is False:
        reason = "redis: not subscribed to the message queue"
    return reason


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


def start_services(app: Flask) -> None:
    """Subscribe to the message queue and start the presence heartbeat now.

    python-socketio starts its Redis listener on the first connection; until
    then this instance would miss what others publish and /healthz could not
    tell whether Redis works.
    """
    state = app.extensions["chat"]
    server = socketio.server
    # Gauges read the state itself: a reclaimed name or a dropped transport
    # can never make them drift.
    # python-socketio keeps every connected sid in the room ``None``.
    metrics.SOCKETS.set_function(
        lambda: len(server.manager.rooms.get("/", {}).get(None, ()))
    )
    metrics.USERS.set_function(lambda: len(state.presence.local))
    metrics.LOGINS_WAITING.set_function(lambda: state.admission.waiting)
    metrics.CONNECTIONS.set_function(lambda: transport.counts.connections)
    metrics.FLUSHERS.set_function(lambda: transport.counts.flushers)
    metrics.SESSIONS.set_function(lambda: len(server.eio.sockets))
    metrics.DEGRADED.set_function(lambda: 1 if degraded_reason(state) else 0)
    metrics.BUILD.info({"release": app.config["RELEASE"], "version": _version()})
    state.messages.on_stored = functools.partial(announce_stored, state)
    from chat.events import name_lost

    state.presence.on_name_lost = functools.partial(name_lost, app)
    if app.config["REDIS_URL"]:
        manager = server.manager
        metrics.ROOMS_KEPT.labels("channel").set_function(manager.subscribed_rooms)
        metrics.ROOMS_KEPT.labels("delivery").set_function(state.delivery.rooms)
        metrics.ROOMS_KEPT.labels("tail").set_function(state.recent.rooms)
    if app.config["REDIS_URL"] and not server.manager_initialized:
        server.manager.delivery = state.delivery
        server.manager.recent = state.recent

        def back(gap_started_ms: int) -> None:
            # Presence first (it marks the instance ready), then the replay.
            state.presence.beat(announce)
            replay_missed(state, gap_started_ms)

        # An instance that went away may have taken publishes with it; the
        # streams have its messages.
        state.presence.on_instance_gone = lambda seconds_ago: replay_missed(
            state, int((time.time() - seconds_ago) * 1000)
        )
        # Presence stays "degraded" from a lost subscription until a heartbeat
        # has written this instance's users back; that beat runs at once.
        server.manager.on_lost = state.presence.mark_degraded
        server.manager.on_back = back
        server.manager_initialized = True
        server.manager.initialize()
    state.presence.start(announce, socketio.start_background_task, socketio.sleep)
    if app.config["LOG_SESSIONS_EVERY_S"] > 0:
        socketio.start_background_task(
            state.sessions.run, app.config["LOG_SESSIONS_EVERY_S"], socketio.sleep
        )


def drain(app: Flask) -> None:
    """Close every connection of this instance and release its users.

    Called on SIGTERM (gunicorn.conf.py). Clients see a transport close and
    reconnect, through the load balancer, to a live instance.
    """
    state = app.extensions["chat"]
    if state.draining:
        return  # Ctrl-C reaches the worker twice: from the terminal and the master
    state.draining = True
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
    for eio_sid in list(eio.sockets):
        close_session(eio, eio_sid, reconnect=True)
    if quiet:
        return
    with app.app_context():
        for member, count, seq in state.presence.stop():
            announce("user left", member.room, member.name, count, seq)
