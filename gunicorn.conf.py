"""gunicorn settings for one chat instance: one gevent-websocket worker.

Every value comes from the environment so a platform (or ``make cluster``)
can run several instances on one host. See NOTES in the README for why each
non-default value is here.
"""

import os

from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from geventwebsocket.handler import WebSocketHandler

# -- server socket ----------------------------------------------------------
bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '5050')}"
backlog = 2048
# A rolling restart starts the new instance on the port the old one still
# holds (deploy/supervisor.py sets REUSE_PORT=1).
reuse_port = os.environ.get("REUSE_PORT") == "1"

# -- worker processes ---------------------------------------------------------
# socket.io sessions live in one process: never more than one worker, even
# when a platform sets WEB_CONCURRENCY.
workers = 1


class ChatWebSocketHandler(WebSocketHandler):
    """gevent-websocket's handler with a 1 KiB read buffer instead of 8 KiB.

    The buffered reader is the largest single allocation per open websocket
    (tracemalloc, see docs/benchmarks.md); chat frames are small. Measured:
    56.9 -> 53.5 kB of RSS per held connection.
    """

    def __init__(self, sock, address, server, *args, **kwargs):
        super().__init__(sock, address, server, *args, **kwargs)
        self.rfile = sock.makefile("rb", READ_BUFFER_BYTES)


class ChatWorker(GeventWebSocketWorker):
    """The gevent-websocket worker, serving with ``ChatWebSocketHandler``."""

    wsgi_handler = ChatWebSocketHandler


READ_BUFFER_BYTES = int(os.environ.get("READ_BUFFER_BYTES", "1024"))
worker_class = ChatWorker
# The gevent worker's default of 1000 would cap the container at 1000 users.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "10000"))
timeout = 30
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT_S", "20"))
keepalive = 5

# Several instances on one host must not share gunicorn's control socket.
control_socket_disable = True

# -- logging ------------------------------------------------------------------
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


# -- server hooks -------------------------------------------------------------
def post_worker_init(worker):
    """On SIGTERM, close our sockets and release our users before gunicorn waits.

    Without this gunicorn waits the whole graceful timeout for open websockets
    and then kills them, and their users stay "online" until the TTL.
    """
    import signal

    import gevent

    from chat.server import drain

    stop = worker.handle_exit

    def handle_exit(sig, frame):
        gevent.spawn(drain, worker.wsgi)
        stop(sig, frame)

    signal.signal(signal.SIGTERM, handle_exit)
