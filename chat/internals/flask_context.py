"""Flask's request context for a socket.io event, without the work nobody
asked for.

Flask-SocketIO pushes a full request context around every event a client
sends: an app context, four blinker signals, the teardown functions looked
up and run on the way out, and the request's proxies read a dozen times to
note the session id on it. An app that registers no teardown function and
no receiver for the context signals gets nothing from most of that, and a
churn cycle (connect, log in, one message, leave) has four events: about
11 µs each, against 4 µs for what the handlers use (``request``,
``current_app``, ``g`` and ``session``, bound to this event's objects).

``ChatSocketIO`` takes that short path only while nothing is registered
that it would skip; otherwise, and for an app that lets Flask-SocketIO
manage its session, it hands the event to Flask-SocketIO's own
``_handle_event``. The contexts are Flask's own classes, bound and unbound
through the context variables Flask's proxies read (``flask.globals``):
that is the internal relied on, checked by tests/test_internals.py.
"""

from __future__ import annotations

import sys

from flask import signals
from flask.ctx import AppContext, RequestContext
from flask.globals import _cv_app, _cv_request
from flask_socketio import SocketIO


class EventContext(RequestContext):
    """A request context for one event on a session's first request.

    Built like Flask's (the request from the session's environ, its JSON
    module the app's, the session opened by the app's session interface),
    with no URL adapter: no URL is matched or built for an event.
    """

    def __init__(self, app, environ) -> None:
        request = app.request_class(environ)
        request.json_module = app.json
        self.app = app
        self.request = request
        self.url_adapter = None
        self.flashes = None
        interface = app.session_interface
        session = interface.open_session(app, request)
        if session is None:  # (an empty session is falsy)
            session = interface.make_null_session(app)
        self._session = session
        self._after_request_functions = []
        self._cv_tokens = []


def needs_full_context(app) -> bool:
    """Whether anything is registered that a full context would run: a
    teardown function, or a receiver of a signal that pushing or popping a
    context sends."""
    # Each signal named, not ``any`` over a generator: this runs per event.
    return bool(
        app.teardown_request_funcs
        or app.teardown_appcontext_funcs
        or signals.appcontext_pushed.receivers
        or signals.appcontext_tearing_down.receivers
        or signals.appcontext_popped.receivers
        or signals.request_tearing_down.receivers
    )


class ChatSocketIO(SocketIO):
    """Flask-SocketIO with the short event context when nothing is lost."""

    def _handle_event(self, handler, message, namespace, sid, *args):
        environ = self.server.get_environ(sid, namespace=namespace)
        if not environ:
            # No record of this client: Flask-SocketIO ignores the event.
            return "", 400
        app = environ["flask.app"]
        if self.manage_session or needs_full_context(app):
            return super()._handle_event(handler, message, namespace, sid, *args)
        context = EventContext(app, environ)
        request = context.request
        request.sid = sid
        request.namespace = namespace
        request.event = {"message": message, "args": args}
        app_token = _cv_app.set(AppContext(app))
        request_token = _cv_request.set(context)
        try:
            if message == "connect":
                auth = args[1] if len(args) > 1 else None
                try:
                    answer = handler(auth)
                except TypeError:
                    answer = handler()
            else:
                answer = handler(*args)
        except ConnectionRefusedError:
            raise  # python-socketio's to answer
        except Exception:
            error_handler = self.exception_handlers.get(
                namespace, self.default_exception_handler
            )
            if error_handler is None:
                raise
            return error_handler(sys.exc_info()[1])
        else:
            # As Flask-SocketIO does when Flask manages the user's session.
            session = context._session
            if getattr(session, "modified", True):
                app.session_interface.save_session(app, session, app.response_class())
            return answer
        finally:
            _cv_request.reset(request_token)
            _cv_app.reset(app_token)
            # Werkzeug's request put itself in the session's environ, which
            # lives as long as the session: Flask's pop lets it go.
            environ["werkzeug.request"] = None


def event_app():
    """The app of the context being handled: ``current_app``'s object,
    read without its proxy (a fifth of the cost; a churn cycle reads it a
    dozen times). Outside any app context, the same error as the proxy."""
    context = _cv_app.get(None)
    if context is None:
        raise RuntimeError("Working outside of application context.")
    return context.app


def event_request():
    """The request of the context being handled: ``request``'s object,
    read without its proxy. Outside any request context, the same error as
    the proxy."""
    context = _cv_request.get(None)
    if context is None:
        raise RuntimeError("Working outside of request context.")
    return context.request
