"""The library versions whose internals chat/ relies on, in one place.

chat.internals subclasses python-engineio's socket and server and
python-socketio's server and manager, and Flask-SocketIO's event handling
with Flask's contexts; chat.transport subclasses
gevent-websocket's websocket and handler and gunicorn's pywsgi server, and
unmasks with wsaccel; chat.cluster.manager subclasses python-socketio's
Redis manager; chat.cluster.wire sends commands on redis-py's connections
without its pipeline; chat.internals.pubsub reads pub/sub replies below
redis-py's ``listen``; chat.internals.redis_pool checks pooled connections
with its own parser; gunicorn.conf.py's worker replaces the main loop of
gunicorn's gevent worker. requirements.txt pins the same versions, and
tests/test_internals.py fails when an installed one differs or when an
upgrade moves what the overrides rely on.
"""

PINNED = {
    "flask": "3.1.3",
    "flask-socketio": "5.7.0",
    "gevent": "26.9.0",
    "gevent-websocket": "0.10.1",
    "wsaccel": "0.6.7",
    "python-engineio": "4.15.1",
    "python-socketio": "5.18.1",
    "bidict": "0.24.1",
    "gunicorn": "27.0.1",
    "redis": "8.1.0",
}
