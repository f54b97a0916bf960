"""The login table: where a churn cycle's CPU goes, from a py-spy raw profile.

A churn cycle is what a reconnect storm is made of: a websocket handshake,
the upgrade, ``add user``, one message, the disconnect. ``bench.profile
churn`` samples one instance's worker with py-spy (active samples only) and
measures its CPU per cycle; this splits that figure by what each sample was
doing, judged from its whole stack, so every sample counts once:

- a Redis round trip, by our function that made it (the caller nearest to
  redis-py), and within it the socket system calls apart from redis-py's
  own Python (building commands, parsing replies, the connection pool);
- the websocket's handshake and upgrade, the engine.io and socket.io
  connect, reading and decoding frames;
- the event handlers (ours, under Flask-SocketIO's dispatch), logging,
  sends to sockets, and the gevent hub.
"""

from __future__ import annotations

import collections
from pathlib import Path

# (row, markers): the first row one of whose markers is in the stack wins,
# so the order is the priority; markers are substrings of py-spy's frames,
# "function (path:line)".
ROWS = [
    ("logging", ("(logging/", "chat/observe/logs.py")),
    ("HTTP request and handshake (pywsgi)", ("read_request ", "read_requestline ")),
    ("websocket upgrade", ("upgrade_websocket ", "upgrade_connection ")),
    ("engine.io / socket.io connect", ("_handle_connect ", "_handle_eio_connect ")),
    ("connect: our handler", ("chat/events/connection.py:2", "on_connect ")),
    ("login: our handler", ("chat/events/login.py",)),
    ("message: our handler", ("chat/events/talk.py",)),
    ("disconnect: our handler", ("on_disconnect ", "_leave ")),
    ("frames: reading and decoding", ("chat/transport/websocket.py",)),
    (
        "Flask-SocketIO, Flask, python-socketio: dispatch and request context",
        ("(flask_socketio/", "(socketio/", "(flask/", "(werkzeug/"),
    ),
    ("engine.io", ("(engineio/", "chat/internals/")),
    ("gevent hub, timers and the rest", ("",)),
]

# A sample in a socket call: charged to its Redis round trip when it is one,
# else (a frame written to a client) to SEND.
SYSCALLS = ("SocketMixin.send", "SocketMixin.recv", "socket.send", "socket.recv")
SEND = "the send system call (frames to sockets)"


def redis_caller(frames: list[str]) -> str | None:
    """Our function nearest to redis-py on the stack, when redis-py is on it."""
    for i, frame in enumerate(frames):
        if "(redis/" in frame:
            ours = [f for f in frames[:i] if "(chat/" in f]
            if not ours:
                return "Redis: outside our code"
            function, _, where = ours[-1].partition(" (")
            module = where.removeprefix("chat/").split(":")[0]
            return f"Redis: {function} ({module})"
    return None


def classify(frames: list[str]) -> str:
    caller = redis_caller(frames)
    if caller:
        leaf = frames[-1]
        kind = "socket" if leaf.startswith(SYSCALLS) else "redis-py"
        return f"{caller}, {kind}"
    if frames[-1].startswith("SocketMixin.send"):
        return SEND
    stack = ";".join(frames)
    # The last row's marker, "", is in every stack.
    return next(row for row, markers in ROWS if any(m in stack for m in markers))


def login_table(raw: Path, ms_per_cycle: float) -> str:
    """A markdown table: ms of CPU per churn cycle by row, largest first."""
    rows, total = collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        rows[classify(stack.split(";"))] += int(count)
        total += int(count)
    redis = sum(n for row, n in rows.items() if row.startswith("Redis"))
    redis_py = sum(n for row, n in rows.items() if row.endswith("redis-py"))
    lines = [
        f"CPU per churn cycle: {ms_per_cycle:.2f} ms ({total} samples)",
        "",
        "| where | ms per cycle | share |",
        "| --- | ---: | ---: |",
    ]
    for row, count in rows.most_common():
        share = count / total
        lines.append(f"| {row} | {ms_per_cycle * share:.3f} | {100 * share:.1f} % |")
    own, all_redis = ms_per_cycle * redis_py / total, ms_per_cycle * redis / total
    lines.append(
        f"| **all Redis round trips** (redis-py's own Python: {own:.3f} ms) "
        f"| {all_redis:.3f} | {100 * redis / total:.1f} % |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    # python -m bench.login_table RAW_PROFILE MS_PER_CYCLE
    print(login_table(Path(sys.argv[1]), float(sys.argv[2])))
