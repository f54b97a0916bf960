"""What one held websocket costs our server, piece by piece.

    .venv/bin/python -m bench.memory_table [small] [large]

One instance in this process (the app, ``ChatWSGIServer`` and the handler
gunicorn's worker uses, after gevent's monkey patching), held websockets of
the stock socket.io client from the benchmark's generator (logged in, rooms
of 100, idle). Between ``small`` and ``large`` connections (1,000 and 2,000)
it compares tracemalloc snapshots and prints the added bytes per
connection by where they were allocated (the innermost frame's module),
then the lines that allocate the most. (tracemalloc's own records inflate
the RSS: the RSS per connection is ``tests/test_memory_per_connection.py``'s
and ``make bench``'s figure.)
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import collections  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from gevent.pool import Pool  # noqa: E402

from bench.run import loadgen  # noqa: E402
from deploy.procs import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LINES = 15

# Where an allocation's innermost frame is, as a named piece of a connection.
PIECES = (
    ("gevent/_socket", "gevent sockets (and their watchers)"),
    ("gevent/", "gevent (greenlets, hub, watchers)"),
    ("greenlet", "greenlets"),
    ("engineio/", "python-engineio (socket, session)"),
    ("socketio/", "python-socketio (session, rooms)"),
    ("flask_socketio/", "Flask-SocketIO"),
    ("geventwebsocket/", "gevent-websocket (websocket, handler)"),
    ("chat/transport/", "ours: transport (websocket, handler, server)"),
    ("chat/internals/", "ours: engine.io socket, server"),
    ("chat/presence/", "ours: presence (members)"),
    ("chat/limits/", "ours: limits (buckets, counts)"),
    ("chat/", "ours: the rest"),
    ("pywsgi", "pywsgi (request, environ)"),
    ("werkzeug/", "werkzeug / Flask"),
    ("flask/", "werkzeug / Flask"),
)


def piece(filename: str) -> str:
    for needle, name in PIECES:
        if needle in filename:
            return name
    return "other: " + Path(filename).name


class _Quiet:
    """gunicorn's logger where the worker has one: every call does nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def serve():
    """The instance as gunicorn's worker builds it."""
    os.environ.setdefault("MAX_SESSIONS_PER_IP", "0")
    os.environ.setdefault("MAX_CONNECTIONS_PER_IP", "0")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    from chat import create_app
    from chat.transport.handler import handler_class
    from chat.transport.server import ChatWSGIServer

    app = create_app()
    port = free_port()
    server = ChatWSGIServer(
        ("127.0.0.1", port),
        application=app,
        spawn=Pool(20000),
        handler_class=handler_class(app.config),
        log=_Quiet(),
    )
    server.start()
    gc.collect()
    gc.freeze()
    return server, f"http://127.0.0.1:{port}"


def main(small: int = 1000, large: int = 2000) -> None:
    tracemalloc.start(1)
    server, url = serve()
    gen = loadgen({"mode": "hold", "url": url}, stdin=subprocess.PIPE)

    def hold(target: int):
        gen.stdin.write(f"target {target}\n")
        gen.stdin.flush()
        answer = json.loads(gen.stdout.readline())
        assert answer == {"ready": target, "errors": 0}, answer
        gevent.sleep(1)  # the last logins' replies written, pings idle
        gc.collect()
        return tracemalloc.take_snapshot()

    try:
        hold(200)
        before = hold(small)
        after = hold(large)
    finally:
        gen.kill()
        server.stop()
    added = large - small
    by_piece: collections.Counter = collections.Counter()
    for stat in after.compare_to(before, "filename"):
        by_piece[piece(stat.traceback[0].filename)] += stat.size_diff
    traced = sum(by_piece.values())
    print(f"{added} connections added ({small} -> {large})\n")
    print("| piece | bytes per connection |")
    print("| --- | ---: |")
    for name, size in by_piece.most_common():
        if abs(size) / added >= 20:
            print(f"| {name} | {size / added:,.0f} |")
    rest = sum(s for s in by_piece.values() if abs(s) / added < 20)
    print(f"| the rest of Python's allocations | {rest / added:,.0f} |")
    print(f"| **Python's allocator, in all** | **{traced / added:,.0f}** |")
    print("\nThe lines that allocate the most per connection:\n")
    for stat in after.compare_to(before, "lineno")[:LINES]:
        frame = stat.traceback[0]
        where = frame.filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        print(f"- {stat.size_diff / added:,.0f} B: {where}:{frame.lineno}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
