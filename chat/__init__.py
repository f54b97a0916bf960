"""The chat room: an app factory and the one SocketIO object handlers bind to."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from flask.sessions import SessionInterface
from flask_socketio import SocketIO

socketio = SocketIO()


class ChatFlask(Flask):
    """Flask, without URL routing for the contexts of socket.io events.

    Flask-SocketIO pushes a request context built from the session's first
    request (``/socket.io/...``) for every event it handles. Flask binds a
    URL adapter to it and matches the path each time, for handlers that
    never build a URL: a few per cent of an instance's CPU in a reconnect
    storm. HTTP requests to that path never reach Flask (engine.io's
    middleware answers them), so its contexts get no adapter: nothing is
    matched, and no NotFound with a traceback (a reference cycle per event)
    is kept on them either.
    """

    def create_url_adapter(self, request):
        if request is not None and request.path.startswith("/socket.io/"):
            return None
        return super().create_url_adapter(request)


class NoSessions(SessionInterface):
    """The chat keeps nothing in Flask's session (a page's name and token
    live in the page), so no session cookie is read or written.

    Flask-SocketIO pushes a request context for every event, and Flask
    opens the session each time: parsing and verifying a cookie that is
    never used cost about 6 % of a login in a reconnect storm.
    """

    def open_session(self, app, request):
        return self.make_null_session(app)

    def save_session(self, app, session, response) -> None:
        return None


def create_app(config=None) -> Flask:
    """Build the app from ``config`` (default: the environment, see config.py)."""
    from chat import events, views  # noqa: F401  (handlers register on import)
    from chat.broker import require_redis
    from chat.clientjs import client_files
    from chat.config import Config
    from chat.guards import Guard
    from chat.logs import InstanceFilter, configure_logging
    from chat.server import log_start, socketio_options, start_services
    from chat.sessions import install
    from chat.state import build_state

    config = config or Config()
    handler = configure_logging(config.LOG_FORMAT, config.LOG_LEVEL)
    if config.REDIS_URL:
        require_redis(config.REDIS_URL)
    app = ChatFlask(__name__, template_folder="../templates", static_folder="../static")
    app.config.from_object(config)
    app.session_interface = NoSessions()
    app.extensions["chat"] = build_state(config)
    if handler is not None:
        handler.addFilter(InstanceFilter(app.extensions["chat"].instance_id))
    app.register_blueprint(views.bp)
    socketio.init_app(app, **socketio_options(config))
    install(socketio.server, config)
    vendor = Path(app.static_folder) / "vendor"
    app.wsgi_app = Guard(
        client_files(app.wsgi_app, vendor),
        app.extensions["chat"],
        config.ALLOWED_HOSTS,
        socketio.server.eio.refusal,
    )
    start_services(app)
    log_start(app)
    return app
