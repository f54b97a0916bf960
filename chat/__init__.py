"""The chat room: the app factory, where every object is built once and
handed to what needs it.

Where to start reading: chat.events (the contract's handlers), then
chat.messages in the order its docstring gives. The README's module map
lists every package.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from flask import Flask

from chat import events
from chat.cluster.manager import require_redis
from chat.config import Config, SettingError
from chat.internals.flask_context import ChatSocketIO
from chat.internals.socketio_server import install
from chat.lifecycle import log_start, socketio_options, start_services
from chat.moderation.cli import moderation as moderation_cli
from chat.observe.logs import (
    InstanceFilter,
    configure_logging,
    name_instance_everywhere,
)
from chat.state import build_state
from chat.web import admin, moderation, views
from chat.web.app import ChatFlask, NoSessions
from chat.web.bundle import client_files
from chat.web.guards import Guard

log = logging.getLogger(__name__)


def _settings(config):
    """``config``, or the settings from the environment; a setting that
    cannot work stops the process with one line (exit 3: gunicorn's "worker
    failed to boot", so the master stops too)."""
    if config is not None:
        return config
    try:
        return Config()
    except SettingError as error:
        sys.stderr.write(f"cannot start: {error}\n")
        raise SystemExit(3) from None


def create_app(config=None) -> Flask:
    """Build the app from ``config`` (default: the environment, see config.py).

    The app's Flask-SocketIO object is ``app.extensions["socketio"]``.
    """
    app = ChatFlask(__name__, template_folder="../templates", static_folder="../static")
    settings = _settings(config)
    app.config.from_object(settings)
    # Settings are read one way everywhere: ``config["NAME"]``.
    config = app.config
    handler = configure_logging(config["LOG_FORMAT"], config["LOG_LEVEL"])
    if config["REDIS_URL"]:
        require_redis(config["REDIS_URL"])
    app.session_interface = NoSessions()
    socketio = ChatSocketIO()
    state = app.extensions["chat"] = build_state(config, socketio)
    if handler is not None:
        instance_filter = InstanceFilter(state.instance_id)
        handler.addFilter(instance_filter)
        name_instance_everywhere(instance_filter)
    for warning in getattr(settings, "warnings", ()):
        log.warning(warning, extra={"instance": state.instance_id})
    app.register_blueprint(views.bp)
    app.register_blueprint(moderation.bp)
    app.register_blueprint(admin.bp)
    events.register(socketio)
    socketio.init_app(app, **socketio_options(config, state))
    install(socketio.server, config)
    admin.instrument(socketio, config, f"chat-{state.instance_id}")
    vendor = Path(app.static_folder) / "vendor"
    app.wsgi_app = Guard(
        client_files(app.wsgi_app, vendor),
        state,
        config["ALLOWED_HOSTS"],
        socketio.server.eio.refusal,
    )
    app.cli.add_command(moderation_cli)
    if click.get_current_context(silent=True) is None:
        # Not under the ``flask`` command (a shell command is no instance:
        # it must not join the cluster's presence or its message queue).
        start_services(app, socketio)
        log_start(app)
    return app
