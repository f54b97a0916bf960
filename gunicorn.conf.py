"""gunicorn settings for one chat instance: one gevent-websocket worker.

Every value comes from the environment so a platform (or ``make cluster``)
can run several instances on one host. The README's "Settings" and "Limits"
tables say what each one is for.
"""

import gc
import os
import sys
import time

from geventwebsocket.gunicorn.workers import GeventWebSocketWorker


def _whole(name: str, default: int, low: int, high: int | None = None) -> int:
    """An integer setting of gunicorn's; a bad one stops with one line that
    names it (the app's own settings are checked by chat/config.py)."""
    raw = (os.environ.get(name) or "").strip() or str(default)
    expected = f"a whole number from {low}" + (f" to {high}" if high else " up")
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        sys.stderr.write(f"cannot start: {name}={raw!r}: expected {expected}\n")
        raise SystemExit(2)
    return value


# -- server socket ----------------------------------------------------------
bind = f"{os.environ.get('HOST', '127.0.0.1')}:{_whole('PORT', 5050, 1, 65535)}"
backlog = 2048

# -- worker processes ---------------------------------------------------------
# socket.io sessions live in one process: never more than one worker, even
# when a platform sets WEB_CONCURRENCY.
workers = 1


# Middle-generation collections before a full one (Python's default: 10).
FULL_COLLECTION_AFTER = 100


class ChatWorker(GeventWebSocketWorker):
    """The gevent-websocket worker, serving with chat.transport's handler and
    server, that stops as soon as it is told to.

    The handler is bound to the app's limits after the app is loaded in the
    worker (after gevent's monkey patching), never in the master.
    """

    # Set by ``run``: the worker's main loop waits on it.
    _stopping = None

    @property
    def alive(self) -> bool:
        return self._alive

    @alive.setter
    def alive(self, value: bool) -> None:
        # gunicorn's signal handlers stop a worker by setting ``alive``.
        self._alive = value
        if not value and self._stopping is not None:
            self._stopping.set()

    def run(self):
        """gunicorn's gevent worker loop, woken at once when told to stop.

        gunicorn's own looks at ``alive`` once a second, and once a second
        again while the connections end: every stop (an instance of a
        rolling deploy, a scale-down, Ctrl-C) waited one to two seconds on
        nothing. Here the main loop waits on an event that a stop sets, and
        the graceful part on the connection pool itself. The rest is as in
        gunicorn: the same servers, the heartbeat every second, and the
        graceful timeout.
        """
        from gevent.event import Event
        from gevent.pool import Pool
        from gunicorn.http.wsgi import base_environ
        from gunicorn.sock import ssl_context
        from gunicorn.workers.ggevent import VERSION

        # (Imported here: gunicorn reads this file's names as its settings.)
        self._stopping = Event()
        if not self.alive:
            self._stopping.set()
        ssl_args = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        servers = []
        for listener in self.sockets:
            listener.setblocking(1)
            environ = base_environ(self.cfg)
            environ.update({"wsgi.multithread": True, "SERVER_SOFTWARE": VERSION})
            server = self.server_class(
                listener,
                application=self.wsgi,
                spawn=Pool(self.worker_connections),
                log=self.log,
                handler_class=self.wsgi_handler,
                environ=environ,
                **ssl_args,
            )
            server.start()
            servers.append(server)
        while self.alive:
            self.notify()
            self._stopping.wait(1.0)
        for server in servers:
            server.close()
        deadline = time.monotonic() + self.cfg.graceful_timeout
        for server in servers:
            while not server.pool.join(timeout=_until(deadline, at_most=1.0)):
                if time.monotonic() >= deadline:
                    self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
                    for each in servers:
                        each.stop(timeout=1)
                    return
                self.notify()

    def load_wsgi(self):
        super().load_wsgi()
        from chat.transport.handler import handler_class
        from chat.transport.server import ChatWSGIServer

        self.server_class = ChatWSGIServer
        self.wsgi_handler = handler_class(self.wsgi.config)
        # The app, its libraries and their caches live as long as the
        # process: kept out of every garbage collection, so that a full
        # collection scans only what connections and messages create.
        gc.collect()
        gc.freeze()
        # A full collection walks every connection's objects and stops them
        # all while it runs (40-100 ms at 5,000 connections). Python starts
        # one after ten young collections whenever the surviving objects
        # grew by a quarter, which connections that come and go do all the
        # time: about one per 650 logins. Ten times fewer full collections
        # (each as long as before) take 85 % of their time away; what they
        # find (the cycles a closed connection leaves) waits longer, and the
        # young collections and this bound still reclaim it.
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)

    def handle_quit(self, sig, frame):
        """Ctrl-C (SIGINT) and SIGQUIT: drain and stop, without a traceback.

        gunicorn's gevent worker calls ``sys.exit`` in a new greenlet here,
        which gevent's hub reports as a failure with a traceback, and the
        open websockets would hold the worker until it is killed.
        """
        import gevent

        from chat.lifecycle import drain

        gevent.spawn(drain, self.wsgi)
        self.alive = False


worker_class = ChatWorker
# The gevent worker's default of 1000 would cap the container at 1000 users.
worker_connections = _whole("WORKER_CONNECTIONS", 20000, 1)
timeout = 30


def _until(deadline: float, at_most: float) -> float:
    """Seconds from now to ``deadline`` (none if past), at most ``at_most``."""
    return max(0.0, min(at_most, deadline - time.monotonic()))


def raise_descriptor_limit(wanted: int) -> None:
    """Let the process open a descriptor per connection, up to the hard limit.

    Most shells and containers start processes with a soft limit of 1024
    open files: the instance would refuse connections long before
    ``worker_connections``. The soft limit may be raised up to the hard one
    without privileges.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# Each connection is one descriptor; Redis, logs and listeners need a few more.
raise_descriptor_limit(worker_connections + 1024)
graceful_timeout = _whole("GRACEFUL_TIMEOUT_S", 20, 0)
keepalive = 5

# Several instances on one host must not share gunicorn's control socket.
control_socket_disable = True

# -- logging ------------------------------------------------------------------
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


def _log_formats():
    """chat/observe/logs.py loaded on its own: importing the ``chat`` package
    here, in the master, would import Flask and socket.io before the worker's
    gevent monkey-patching."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent / "chat" / "observe" / "logs.py"
    spec = importlib.util.spec_from_file_location("chat_log_formats", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if os.environ.get("LOG_FORMAT") == "json":
    # gunicorn's own lines (start, workers, signals, access) as JSON too.
    logconfig_dict = _log_formats().gunicorn_logconfig(loglevel, bool(accesslog))


# -- server hooks -------------------------------------------------------------
def on_starting(server):
    """Refuse gunicorn's own TLS (``--certfile``) with one line, at start.

    TLS ends at the load balancer or the platform's router. The websocket
    transport reads and writes the connection's native socket (no greenlet
    per idle connection, no wrapper per frame), which under TLS would be
    the encrypted bytes: pages would load over HTTPS and every websocket
    would close at its first frame. Exit code 3, as for a bad REDIS_URL.
    """
    if server.cfg.is_ssl:
        server.log.error(
            "cannot start: gunicorn's TLS (certfile) is not supported; "
            "end TLS at the load balancer or the platform's router"
        )
        raise SystemExit(3)


def post_worker_init(worker):
    """On SIGTERM, close our sockets and release our users before gunicorn waits.

    Without this gunicorn waits the whole graceful timeout for open websockets
    and then kills them, and their users stay "online" until the TTL.
    """
    import signal

    import gevent

    from chat.lifecycle import drain

    stop = worker.handle_exit

    def handle_exit(sig, frame):
        gevent.spawn(drain, worker.wsgi)
        stop(sig, frame)

    signal.signal(signal.SIGTERM, handle_exit)
