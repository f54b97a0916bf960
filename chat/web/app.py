"""The Flask app's classes: no URL routing for socket.io's request contexts,
and no session cookie."""

from __future__ import annotations

from flask import Flask
from flask.sessions import NullSession, SessionInterface


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
    never used, a measurable share of a login in a reconnect storm. Every
    request shares one empty, read-only session instead.
    """

    def __init__(self) -> None:
        self.empty = NullSession()

    def open_session(self, app, request):
        return self.empty

    def save_session(self, app, session, response) -> None:
        return None
