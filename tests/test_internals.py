"""Fails loudly when an upgrade moves the library internals chat/ relies on.

chat.internals and chat.transport subclass gevent-websocket,
python-engineio and python-socketio classes, override
private methods and rely on the order in which engine.io builds a socket; a
new version may rename them and leave the app silently unguarded or slow.
"""

import http.client
import inspect
import json
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import engineio
import engineio.packet
import engineio.socket
import gevent.socket
import pytest
import redis
import socketio
from gevent.pywsgi import WSGIHandler
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import Header, WebSocket
from gunicorn.workers.base import Worker
from gunicorn.workers.ggevent import VERSION, GeventWorker, PyWSGIServer

from chat.internals import engineio_server, engineio_socket, socketio_server
from chat.internals.pins import PINNED
from chat.transport import handler as transport_handler
from chat.transport import server as transport_server

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("package", "pinned"), sorted(PINNED.items()))
def test_installed_versions_are_the_ones_the_guards_were_written_for(package, pinned):
    assert version(package) == pinned, (
        f"{package} {version(package)} is installed; chat.internals and "
        f"chat.transport were written for {pinned}: re-check their overrides"
    )


@pytest.mark.parametrize(
    ("cls", "names"),
    [
        (
            WebSocket,
            [
                "read_frame",
                "read_message",
                "receive",
                "send_frame",
                "handle_ping",
                "handle_close",
                "OPCODE_CONTINUATION",
            ],
        ),
        (Header, ["decode_header", "mask", "length", "fin", "opcode", "flags"]),
        (
            WebSocketHandler,
            [
                "upgrade_connection",
                "run_websocket",
                "read_requestline",
                "read_request",
                "SUPPORTED_VERSIONS",
                "upgrade_websocket",
                "run_application",
            ],
        ),
        (
            engineio.Server,
            [
                "create_queue",
                "_trigger_event",
                "_log_error_once",
                "_bad_request",
                "sockets",
            ],
        ),
        (
            socketio.Server,
            [
                "_handle_eio_message",
                "_handle_event",
                "_send_packet",
                "_handle_eio_connect",
                "_handle_eio_disconnect",
            ],
        ),
        (PyWSGIServer, ["handle", "handler_class"]),
        (
            WSGIHandler,
            [
                "_write_with_headers",
                "finalize_headers",
                "headers_sent",
                "status",
                "response_headers",
                "code",
            ],
        ),
        (
            engineio.socket.Socket,
            [
                "send",
                "close",
                "receive",
                "schedule_ping",
                "_websocket_handler",
                "last_ping",
                "queue",
                "upgrading",
                "upgraded",
                "connected",
                "closing",
                "closed",
            ],
        ),
    ],
)
def test_overridden_internals_still_exist(cls, names):
    defined = set(dir(cls))
    for base in cls.__mro__:
        init = base.__dict__.get("__init__")
        if init is not None and hasattr(init, "__code__"):
            defined |= set(init.__code__.co_names)
    assert [n for n in names if n not in defined] == []


def test_gunicorns_gevent_worker_still_loops_as_ours_replaces_it():
    """gunicorn.conf.py's ``ChatWorker.run`` is gunicorn's gevent worker loop
    with the waits woken by a stop: the same servers from the same helpers,
    stopped by the same ``alive`` flag."""
    source = inspect.getsource(GeventWorker.run)
    for used in ("base_environ(self.cfg)", "ssl_context(self.cfg)", "while self.alive"):
        assert used in source
    assert VERSION.startswith("gevent/")
    assert "self.alive = False" in inspect.getsource(Worker.handle_exit)
    assert "self.alive = False" in inspect.getsource(Worker.handle_quit)


def test_websocket_keeps_the_slots_the_limited_socket_extends():
    assert {"stream", "raw_read", "raw_write", "closed", "handler"} <= set(
        WebSocket.__slots__
    )


def test_install_puts_the_guards_on_flask_socketios_server(app):
    server = app.extensions["socketio"].server
    assert type(server) is socketio_server.ChatSocketIOServer
    assert type(server.eio) is engineio_server.ChatEngineIOServer
    handler = server.eio.handlers["message"]
    assert handler.__func__ is socketio_server.ChatSocketIOServer._handle_eio_message
    assert isinstance(server.eio.create_queue(), engineio_server.BoundedSendQueue)


def test_engineio_swaps_in_the_fast_socket_before_its_first_ping_or_read():
    """engineio_socket.ChatSocket replaces the socket class at the 'connect' event;
    engine.io must build the socket, fire 'connect', then ping and read."""
    source = inspect.getsource(engineio.Server._handle_connect)
    built = source.index("socket.Socket(self, sid)")
    connect = source.index("self._trigger_event('connect'")
    ping = source.index("s.schedule_ping()")
    read = source.index("s.handle_get_request(")
    assert built < connect < ping < read


def test_broadcasts_reach_each_recipient_through_send_eio_packet():
    """One shared engine.io packet per broadcast is what lets the frame be
    built once (engineio_socket.packet_frame caches it on the packet)."""
    source = inspect.getsource(socketio.Manager.emit)
    assert "self.server._send_eio_packet(eio_sid, p)" in source
    pkt = engineio.packet.Packet(engineio.packet.MESSAGE, data="2x")
    assert engineio_socket.packet_frame(pkt) == b"\x81\x03" + b"42x"
    assert engineio_socket.packet_frame(pkt) is engineio_socket.packet_frame(pkt)


def test_gevent_send_with_zero_timeout_raises_instead_of_waiting():
    """LimitedWebSocket.write relies on it never to block the emitting greenlet."""
    left, right = gevent.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        with pytest.raises(BlockingIOError), gevent.Timeout(5):
            while True:
                left.send(b"x" * 65536, 0, 0.0)
    finally:
        left.close()
        right.close()


def test_pywsgi_leaves_a_connection_alone_once_its_handler_lets_go():
    """A detached websocket (ChatWebSocketHandler.run_websocket)
    relies on pywsgi neither reading another request nor closing the socket
    once ``close_connection`` is set and ``socket`` is None."""
    from gevent.pywsgi import WSGIHandler

    handle = inspect.getsource(WSGIHandler.handle)
    assert "while self.socket is not None:" in handle
    assert "if self.socket is not None:" in handle
    one_request = inspect.getsource(WSGIHandler.handle_one_request)
    assert "if self.close_connection:" in one_request
    # The descriptor is closed through the native socket, as pywsgi does.
    assert "_sock.close()" in handle
    with gevent.socket.socket() as sock:
        assert hasattr(sock, "_sock")


def test_gevent_closes_a_connection_when_handle_returns_through_do_close():
    """A parked websocket outlives ``ChatWSGIServer.handle``: the server
    relies on gevent closing the socket only through ``do_close``, which
    it overrides for the sockets it handed on."""
    from gevent import baseserver

    closer = inspect.getsource(baseserver._handle_and_close_when_done)
    assert "close(*args_tuple)" in closer
    assert "close = self.do_close" in inspect.getsource(baseserver.BaseServer.do_handle)


def test_a_read_watcher_wakes_on_data_and_on_our_own_shutdown():
    """A parked websocket (LimitedWebSocket.park) waits in a libev read
    watcher, not a greenlet: the client's bytes wake it, and so must the
    server's own shutdown of the socket (a close from another greenlet),
    or a closed session would never end its reading."""
    left, right = gevent.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    loop = gevent.get_hub().loop
    try:
        for wake in (lambda: right.send(b"x"), lambda: left.shutdown(socket.SHUT_RDWR)):
            woken = gevent.event.Event()
            watcher = loop.io(left.fileno(), 1)
            watcher.start(woken.set)
            wake()
            assert woken.wait(5)
            watcher.close()
    finally:
        left.close()
        right.close()


def test_rooms_are_bidicts_with_the_forward_map_the_broadcast_loop_copies():
    manager = socketio.Manager()
    manager.set_server(socketio.Server())
    manager.basic_enter_room("sid1", "/", "lobby", eio_sid="eio1")
    members = manager.rooms["/"]["lobby"]
    assert members._fwdm == {"sid1": "eio1"}
    assert inspect.signature(socketio.Manager.emit).parameters.keys() >= {
        "event",
        "data",
        "namespace",
        "room",
        "skip_sid",
        "callback",
        "to",
    }


def _busy_rooms(manager) -> list[str]:
    """Sessions in one chat room or two, one still connecting and one with
    a callback waiting, entered as python-socketio's connect enters them."""
    manager.set_server(socketio.Server())
    sids = [f"s{i}" for i in range(6)]
    for i, sid in enumerate(sids):
        manager.basic_enter_room(sid, "/", None, eio_sid=f"eio{i}")
        manager.basic_enter_room(sid, "/", sid, eio_sid=f"eio{i}")
        manager.basic_enter_room(sid, "/", "lobby" if i % 2 else "dev")
    manager.basic_enter_room("s1", "/", "dev")
    manager.basic_enter_room("p9", "/", None, eio_sid="eio9")
    manager.basic_enter_room("p9", "/", "p9", eio_sid="eio9")
    manager.pending_connect["/"] = ["p9"]
    manager._generate_ack_id("s1", lambda *a: None)
    return ["s1", "p9", "s0", "s2", "s3", "s4", "s5"]


def _state(manager) -> dict:
    rooms = {
        ns: {room: dict(members._fwdm) for room, members in by_room.items()}
        for ns, by_room in manager.rooms.items()
    }
    return {
        "rooms": rooms,
        "callbacks": sorted(manager.callbacks),
        "pending_connect": manager.pending_connect,
        "pending_disconnect": manager.pending_disconnect,
    }


def test_a_disconnect_leaves_the_rooms_python_socketios_own_would():
    """``RoomIndex.basic_disconnect`` (which leaves the session's indexed
    rooms) ends in the state python-socketio's (which tests every room)
    does, for sessions in one room or two, connecting, or owed a callback."""
    from chat.internals.emit import FastEmitManager

    ours, theirs = FastEmitManager(), socketio.Manager()
    order = _busy_rooms(ours)
    assert _busy_rooms(theirs) == order
    assert _state(ours) == _state(theirs)
    both = [sorted(m.get_rooms("s1", "/")) for m in (ours, theirs)]
    assert both == [["dev", "lobby", "s1"]] * 2
    for sid in order:
        ours.basic_disconnect(sid, "/")
        theirs.basic_disconnect(sid, "/")
        assert _state(ours) == _state(theirs)
        assert ours.get_rooms(sid, "/") == theirs.get_rooms(sid, "/") == []
    assert ours._joined == {}


@pytest.mark.parametrize("connected", [100, 2000])
def test_a_leave_looks_at_the_leavers_rooms_only_however_many_are_connected(
    monkeypatch, connected
):
    """A disconnect tests the leaver's own rooms, not one room per connected
    session as python-socketio's does: a leave costs the same on a full
    instance, and a wave of leaves does not cost the square of the users."""
    from bidict._base import BidictBase

    from chat.internals.emit import FastEmitManager

    tests = []
    contains = BidictBase.__contains__
    monkeypatch.setattr(
        BidictBase, "__contains__", lambda m, k: tests.append(k) or contains(m, k)
    )
    # Ours: a few tests for each of its three rooms (None, its own, room0).
    for manager, most in ((FastEmitManager(), 6), (socketio.Manager(), None)):
        manager.set_server(socketio.Server())
        for i in range(connected):
            sid = f"s{i}"
            manager.basic_enter_room(sid, "/", None, eio_sid=f"eio{i}")
            manager.basic_enter_room(sid, "/", sid, eio_sid=f"eio{i}")
            manager.basic_enter_room(sid, "/", f"room{i // 100}")
        tests.clear()
        manager.basic_disconnect("s7", "/")
        assert "s7" not in manager.rooms["/"]["room0"]
        if most is None:  # python-socketio's: one test per room
            assert len(tests) > connected
        else:
            assert len(tests) <= most


def test_buffered_reader_hands_over_what_it_holds_without_waiting():
    """LimitedWebSocket.read_socket_directly takes what the HTTP handler's
    buffered reader holds with the socket's timeout at zero: it must return
    the buffered bytes, or nothing, and never wait."""
    left, right = gevent.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        rfile = right.makefile("rb", 1024)
        left.sendall(b"abcdef")
        assert rfile.read(2) == b"ab"  # the rest now sits in rfile's buffer
        right.settimeout(0.0)
        with gevent.Timeout(2):
            assert rfile.read1(100) == b"cdef"
            assert rfile.read1(100) in (b"", None)
        right.settimeout(None)
        rfile.close()
    finally:
        left.close()
        right.close()


@pytest.mark.settings(ROUTE_ID="p5051")
def test_session_ids_start_with_the_route_id(client):
    """ChatEngineIOServer overrides engine.io's ``generate_id``: nginx
    routes by it."""
    handshake = client.get("/socket.io/?EIO=4&transport=polling")
    sid = json.loads(handshake.get_data(as_text=True)[1:])["sid"]
    assert sid.startswith("p5051.") and len(sid) > len("p5051.") + 10


def test_redis_py_parses_replies_with_hiredis():
    """requirements.txt pins hiredis: redis-py must pick its C parser."""
    from redis.connection import DefaultParser
    from redis.utils import HIREDIS_AVAILABLE

    assert HIREDIS_AVAILABLE
    assert DefaultParser.__name__.startswith("_Hiredis")


def test_no_session_cookie_is_read_or_written(client):
    """NoSessions: Flask opens no session per socket.io event."""
    from chat.web.app import NoSessions

    assert isinstance(client.application.session_interface, NoSessions)
    page = client.get("/", headers={"Cookie": "session=garbage"})
    assert page.status_code == 200 and "Set-Cookie" not in page.headers


def test_a_socketio_session_keeps_no_copy_of_flasks_session(app, connect):
    """Flask-SocketIO keeps a copy of Flask's session in each session's
    environ ("saved_session") unless told not to manage sessions; the chat
    keeps nothing there (NoSessions), so no session holds a copy and every
    event shares one empty session."""
    socketio = app.extensions["socketio"]
    assert socketio.manage_session is False
    sock = connect()
    sock.emit("add user", "Alice")
    assert sock.get_received()
    environ = socketio.server.environ.get(sock.eio_sid)
    assert environ and "saved_session" not in environ
    sessions = app.session_interface
    assert sessions.open_session(app, None) is sessions.open_session(app, None)


def test_the_sentinel_pool_blocks_like_redis_pys_blocking_pool():
    """chat.internals.redis_pool mixes Sentinel's pool with
    BlockingConnectionPool: the connection checkout must come from the
    blocking one, the master lookup from Sentinel's connection class."""
    import redis.sentinel

    from chat.internals.redis_pool import ReadinessParser, SentinelBlockingPool

    cls = SentinelBlockingPool
    assert cls.get_connection is redis.BlockingConnectionPool.get_connection
    assert cls.release is redis.BlockingConnectionPool.release
    sentinels = redis.sentinel.Sentinel([("127.0.0.1", 1)])
    pool = cls("svc", sentinels, max_connections=3, timeout=0.1)
    assert pool.max_connections == 3 and pool.timeout == 0.1
    assert pool.connection_class is redis.sentinel.SentinelManagedConnection
    assert pool.pool.maxsize == 3
    assert pool.connection_kwargs["parser_class"] is ReadinessParser


def test_redis_pys_pool_checks_connections_as_the_quick_checks_expect():
    """chat.internals.redis_pool: the pool asks ``can_read()`` of a
    connection before handing it out, the hiredis parser polls with the
    ``select`` module gevent patches, and ``_checkpid`` compares ``pid``."""
    import redis._parsers.hiredis as hiredis_parser

    from chat.internals.redis_pool import ReadinessParser

    checkout = inspect.getsource(redis.BlockingConnectionPool.get_connection)
    assert "connection.can_read()" in checkout
    assert "self._checkpid()" in checkout
    assert "self.pid != os.getpid()" in inspect.getsource(
        redis.ConnectionPool._checkpid
    )
    assert "select.poll()" in inspect.getsource(hiredis_parser._socket_can_read)
    assert ReadinessParser.__mro__[1] is redis.connection.DefaultParser
    for name in ("_reader", "_sock"):
        assert name in inspect.getsource(hiredis_parser._HiredisParser.on_connect)
    # Under the worker's patching, the parser's poll is still the OS's.
    code = (
        "from gevent import monkey; monkey.patch_all(); import select;"
        "from chat.internals import redis_pool as p;"
        "assert select.poll is not p._os_poll;"
        "assert type(p._os_poll).__name__ == 'builtin_function_or_method'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_text_packets_skip_the_binary_scan(app):
    """socketio_server.TextPacket turns off python-socketio's scan for bytes with the
    class flag its msgpack serializer uses; the flag must still gate it."""
    assert app.extensions["socketio"].server.packet_class is socketio_server.TextPacket
    assert "uses_binary_events" in inspect.getsource(socketio.packet.Packet.__init__)
    history = {"messages": [{"id": "1-0", "message": "hi"}] * 50}
    pkt = socketio_server.TextPacket(socketio.packet.EVENT, data=["history", history])
    assert pkt.packet_type == socketio.packet.EVENT
    assert pkt.encode().startswith('2["history",')
    with pytest.raises(TypeError):
        socketio_server.TextPacket(socketio.packet.EVENT, data=["x", b"bytes"]).encode()


# Frames a client may send: events with odd payloads, acknowledgement ids,
# namespaces, broken JSON, pings and closes.
FRAMES = [
    '42["new message","hi"]',
    '42["add user","Alice",{"room":"r"}]',
    "42[]",
    '42["x",{"a":[1,2,{"b":null}]},3.5,true]',
    '421["new message","with an ack"]',
    '42/admin,["x"]',
    '42["broken"',
    "40",
    '40{"token":"t"}',
    "41",
    "43[]",
    "4",
    "4x",
    "2",
    "3",
    "1",
    "6",
]


# The frames engineio_socket's reader hands on itself; the rest take
# engine.io's own decode.
MESSAGE_FRAMES = [f for f in FRAMES if f[:1] == "4" and f[1:2].isnumeric()]


@pytest.mark.parametrize("frame", MESSAGE_FRAMES)
def test_a_message_frame_reaches_socketio_as_engineios_decode_gives_it(frame):
    """engineio_socket's reader passes a frame of a message carrying a
    socket.io packet straight on: engine.io's own decode gives the same."""
    pkt = engineio.packet.Packet(encoded_packet=frame)
    assert pkt.packet_type == engineio.packet.MESSAGE
    assert pkt.data == frame[1:]


@pytest.mark.parametrize("frame", MESSAGE_FRAMES)
def test_an_event_packet_is_handled_as_python_socketios_decode_gives_it(frame):
    """socketio_server's fast path for ``42[`` hands ``_handle_event`` what
    python-socketio's decoded packet would, and broken JSON is a malformed
    packet there as python-socketio's ValueError is."""
    import types

    data = frame[1:]
    cls = socketio_server.ChatSocketIOServer
    server = cls.__new__(cls)
    server.packet_class = socketio_server.TextPacket
    server._binary_packet = {}
    sock = types.SimpleNamespace(closed=False, upgraded=True)
    server.eio = types.SimpleNamespace(sockets={"e": sock})
    calls = []
    handlers = ("_handle_event", "_handle_connect", "_handle_disconnect", "_handle_ack")
    for name in handlers:
        setattr(server, name, lambda *args, name=name: calls.append((name, *args)))
    server._malformed = lambda eio_sid, data, exc: calls.append(("malformed",))
    try:
        socketio.Server._handle_eio_message(server, "e", data)
    except ValueError:
        calls.append(("malformed",))
    theirs = calls[:]
    calls.clear()
    cls._handle_eio_message(server, "e", data)
    assert calls == theirs


def test_the_server_accepts_connections_in_small_bites():
    """ChatWSGIServer.max_accept paces handshakes in a storm; gevent's accept
    loop must still read it (gunicorn sets it only for its StreamServer)."""
    from gevent.baseserver import BaseServer

    assert transport_server.ChatWSGIServer.max_accept == 16
    assert "self.max_accept" in inspect.getsource(BaseServer._do_read)


def test_pywsgi_reads_request_headers_through_message_class():
    """chat.transport.headers replaces pywsgi's header parsing through
    ``MessageClass``."""
    from gevent import pywsgi

    assert "self.MessageClass(self.rfile" in inspect.getsource(
        pywsgi.WSGIHandler.read_request
    )
    assert issubclass(pywsgi.OldMessage, http.client.HTTPMessage)
    handler = transport_handler.ChatWebSocketHandler.MessageClass
    assert handler is not pywsgi.WSGIHandler.MessageClass


def test_the_websocket_handler_answers_a_refused_upgrade_before_any_101():
    """gevent-websocket's ``run_application`` sends what ``upgrade_websocket``
    returns as plain HTTP when no websocket was made: where chat.transport.handler
    answers a draining or busy instance's 503 before the 101."""
    source = inspect.getsource(WebSocketHandler.run_application)
    assert "self.result = self.upgrade_websocket()" in source
    assert "hasattr(self, 'websocket')" in source
    assert "self.process_result()" in source


def test_an_event_context_is_built_as_flasks_own_is(app):
    """flask_context.EventContext fills a RequestContext's fields itself,
    without Flask's constructor: a field a Flask upgrade adds must be seen."""
    from flask.ctx import RequestContext

    from chat.internals.flask_context import EventContext

    environ = {"PATH_INFO": "/socket.io/", "REQUEST_METHOD": "GET"}
    ours = EventContext(app, dict(environ))
    flasks = RequestContext(app, dict(environ))
    assert vars(ours).keys() == vars(flasks).keys()
    assert ours.url_adapter is None and flasks.url_adapter is None


def test_socketio_events_take_the_short_flask_context(app, connect, monkeypatch):
    """Flask-SocketIO must still hand every event to ``_handle_event``, and
    the chat's override must take the short path: Flask's own request
    context is never pushed for an event."""
    from flask.ctx import RequestContext

    pushed = []
    push = RequestContext.push
    monkeypatch.setattr(
        RequestContext, "push", lambda self: pushed.append(self) or push(self)
    )
    sock = connect()
    sock.emit("add user", "Alice")
    sock.emit("new message", "hello", callback=True)
    sock.disconnect()
    assert pushed == []
    app.teardown_request(lambda exc: None)
    sock = connect()
    assert pushed, "with a teardown function, Flask's context is used"


def test_an_instance_drops_its_own_publishes_before_decoding_them():
    """python-socketio's emit puts ``host_id`` last, and the codec writes
    compact JSON: the manager's listener drops the instance's own publishes
    by how they end, and passes everything else (another instance's, and a
    callback, which names the instance it is for) to be decoded."""
    from chat.cluster.manager import ChatRedisManager
    from chat.transport import codec

    def manager():
        made = ChatRedisManager(
            "redis://127.0.0.1:1", channel="c", timeout_s=0.1, fanout=None
        )
        made.json = codec
        made._handle_emit = lambda message: None
        published = []
        made._publish = published.append
        made.emit("new message", {"username": "A", "message": "hi"}, room="r")
        return made, codec.dumps(published[0]).encode()

    ours, mine = manager()
    _, theirs = manager()
    callback = codec.dumps(
        {"method": "callback", "host_id": ours.host_id, "sid": "s", "id": 1}
    ).encode()
    heard = [{"type": "message", "data": data} for data in (mine, theirs, callback)]
    ours._redis_listen_with_retries = lambda: iter(heard)
    assert list(ours._listen()) == [theirs, callback]


def test_an_emit_publishes_the_message_python_socketios_emit_makes():
    """ChatRedisManager.emit skips python-socketio's scan for bytes; for a
    text payload the message is the one ``PubSubManager.emit`` makes, key
    order included (the listener drops its own by how they end). A payload
    with bytes raises in the emitter and nothing is queued."""
    from chat.cluster.manager import ChatRedisManager
    from chat.transport import codec

    made = ChatRedisManager(
        "redis://127.0.0.1:1", channel="c", timeout_s=0.1, fanout=None
    )
    made.json = codec
    handled = []
    made._handle_emit = handled.append
    made._publisher = "busy"  # queue only: no publisher greenlet
    for args, kwargs in [
        (("new message", {"username": "A", "message": "hi"}), {"room": "r"}),
        (("typing", ({"username": "A"}, 2)), {"to": "r", "skip_sid": "s1"}),
        (("login", None), {"room": "sid", "namespace": "/"}),
    ]:
        socketio.PubSubManager.emit(made, *args, **kwargs)
        made.emit(*args, **kwargs)
        assert list(handled[-1].items()) == list(handled[-2].items())
        assert made._outgoing[-1] == made._outgoing[-2]
        assert made._outgoing[-1][1] == codec.dumps(handled[-2])
    before = len(made._outgoing)
    with pytest.raises(TypeError):
        made.emit("new message", {"message": b"bytes"}, room="r")
    assert len(made._outgoing) == before


def test_the_service_task_passes_over_every_session_in_one_wake(app):
    """engine.io's service task waits once per session; ours looks at a
    thousand sessions in one pass: it closes the one whose pong is overdue,
    forgets the closed one, and stops when engine.io's ``shutdown`` sets
    its event."""
    import time

    import gevent.event

    eio = app.extensions["socketio"].server.eio
    waits = []

    class CountingEvent(gevent.event.Event):
        def wait(self, timeout=None):
            waits.append(timeout)
            return super().wait(timeout)

    class Session:
        closing = False

        def __init__(self, sid, closed=False, last_ping=None):
            self.sid, self.closed, self.last_ping = sid, closed, last_ping
            self.checked = 0

        def check_ping_timeout(self):
            self.checked += 1
            if self.last_ping and time.time() - self.last_ping > eio.ping_timeout:
                self.closed = True

    eio.create_event = CountingEvent
    eio.ping_timeout = 0.05
    answering = {f"s{n}": Session(f"s{n}") for n in range(1000)}
    gone = Session("gone", last_ping=time.time() - 60)
    closed = Session("closed", closed=True)
    eio.sockets.update(answering, gone=gone, closed=closed)
    task = gevent.spawn(eio._service_task)
    deadline = time.monotonic() + 10
    while "closed" in eio.sockets and time.monotonic() < deadline:
        gevent.sleep(0.01)
    eio.service_task_event.set()
    task.join(5)
    assert task.dead
    assert "closed" not in eio.sockets and gone.closed
    assert all(session.checked >= 1 for session in answering.values())
    passes = min(session.checked for session in answering.values())
    # One wait per pass, not per session (engine.io's own: 1,002 per pass).
    assert len(waits) <= passes + 2


def test_redis_pys_connections_still_offer_what_send_all_uses():
    """chat.cluster.wire sends commands on a pooled connection as a pipeline
    does: the same connection methods, and no reply callback that a
    pipeline would apply to the commands it sends."""
    import redis

    for name in ("get_connection", "release"):
        assert callable(getattr(redis.ConnectionPool, name))
        assert callable(getattr(redis.BlockingConnectionPool, name))
    for name in ("pack_commands", "send_packed_command", "read_response", "disconnect"):
        assert callable(getattr(redis.connection.AbstractConnection, name))
    assert (
        "with_failure_count"
        in inspect.signature(redis.retry.Retry.call_with_retry).parameters
    )
    client = redis.Redis()
    for command in ("PUBLISH", "EVALSHA"):
        assert client.response_callbacks.get(command) is None
    # send_all packs with hiredis where redis-py's connection would.
    connection = client.connection_pool.make_connection()
    assert type(connection._command_packer) is redis.connection.HiredisRespSerializer
    # What a pipeline does with each reply: read it, keep an error reply
    # in its place.
    source = inspect.getsource(redis.client.Pipeline._execute_pipeline)
    assert "connection.send_packed_command(all_cmds)" in source
    assert "except ResponseError as e:" in source


def test_gevents_native_socket_raises_rather_than_waits_on_a_full_send():
    """The ordered writer (chat.transport.writer) sends on the native
    socket under gevent's: gevent must keep it non-blocking, so that a
    frame the kernel cannot take raises instead of stalling the loop."""
    a, b = gevent.socket.socketpair()
    with a, b:
        assert a._sock.gettimeout() == 0.0
        with pytest.raises(BlockingIOError):
            while True:
                a._sock.send(b"x" * 65536)


def test_redis_pys_pubsub_reads_and_makes_messages_as_the_lean_listener_does():
    """chat.internals.pubsub reads each reply as ``PubSub.parse_response``
    does, and makes a published message as ``handle_message`` does."""
    import redis

    from chat.internals.pubsub import lean_pubsub

    source = inspect.getsource(redis.client.PubSub.parse_response)
    assert "conn.read_response(" in source
    assert "disconnect_on_error=False, push_request=True" in source
    client = redis.Redis()
    assert client._event_dispatcher is not None
    ours = lean_pubsub(client)
    assert ours._event_dispatcher is client._event_dispatcher
    replies = [[b"message", b"room#a", b"x"], [b"smessage", b"room#b", b"y"]]

    class Replies:
        def read_response(self, **options):
            return replies.pop(0)

    ours.connection = Replies()
    ours.subscribed_event.set()
    lean = ours.listen()
    for reply in list(replies):
        assert next(lean) == ours.handle_message(reply)
