"""What one event answers leaves in one system call (``OrderedWriter.hold``),
and holding never reorders frames or keeps them from a waiting client."""

from __future__ import annotations

import gevent
import pytest

from chat.transport.writer import MAX_HELD, encode_frame
from tests.serverws import CountingSocket, server_websocket


@pytest.fixture
def pair():
    """A server websocket on one end of a socket pair, the client's end."""
    websocket, client, opened = server_websocket()
    counting = websocket.raw_socket = CountingSocket(websocket.raw_socket)
    yield websocket, counting, client
    for each in opened:
        each.close()


def frame(text: str) -> bytes:
    return encode_frame(text.encode())


def test_held_frames_leave_together_on_release(pair):
    websocket, counting, _ = pair
    websocket.hold(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    websocket.write(frame("0{open}"))
    websocket.write(frame("40"))
    assert counting.sends == []
    websocket.release()
    assert counting.sends == [
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + frame("0{open}") + frame("40")
    ]


def test_another_greenlets_frame_goes_after_what_is_held_and_at_once(pair):
    """A broadcast or a ping never waits for a handler to finish."""
    websocket, counting, _ = pair
    websocket.hold()
    websocket.write(frame("login"))
    gevent.spawn(websocket.write, frame("broadcast")).join()
    assert counting.sends == [frame("login"), frame("broadcast")]
    websocket.write(frame("history"))
    websocket.release()
    assert counting.sends == [frame("login"), frame("broadcast"), frame("history")]


def test_a_read_or_a_close_sends_what_is_held_first(pair):
    """The client may be waiting for the held frames before it sends."""
    websocket, counting, client = pair
    websocket.hold(b"HEAD")
    # A masked client frame "hi" (mask "abcd").
    masked = bytes(a ^ b for a, b in zip(b"hi", b"ab", strict=True))
    client.sendall(b"\x81\x82abcd" + masked)
    assert websocket.receive() == "hi"
    assert counting.sends == [b"HEAD"]
    websocket.hold()
    websocket.write(frame("last"))
    websocket.close()
    assert counting.sends[1] == frame("last")
    assert counting.sends[2][:1] == b"\x88", "then the close frame"


def test_a_greenlet_holds_a_bounded_number_of_frames(pair):
    websocket, counting, _ = pair
    websocket.hold()
    for number in range(MAX_HELD + 1):
        websocket.write(frame(str(number)))
    # Past the bound, what was held goes, and so does the frame after it.
    assert counting.sends == [
        b"".join(frame(str(n)) for n in range(MAX_HELD)),
        frame(str(MAX_HELD)),
    ]


def _broadcaster(websocket):
    """The manager's broadcast loop with one recipient, ``websocket``."""
    import types

    from bidict import bidict

    from chat.internals.emit import FastEmitManager
    from chat.internals.socketio_server import TextPacket

    manager = FastEmitManager.__new__(FastEmitManager)
    manager.rooms = {"/": {"room": bidict({"sid": "eio"})}}
    sock = types.SimpleNamespace(
        closed=False, direct=websocket, last_ping=None, send=None
    )
    manager.server = types.SimpleNamespace(
        packet_class=TextPacket,
        eio=types.SimpleNamespace(sockets={"eio": sock}, ping_timeout=20),
    )
    return lambda text: manager.emit("new message", text, "/", room="room")


def test_a_broadcast_goes_after_what_another_event_holds(pair):
    websocket, counting, _ = pair
    broadcast = _broadcaster(websocket)
    broadcast("first")
    assert counting.sends == [frame('42["new message","first"]')]
    holding = gevent.spawn(lambda: (websocket.hold(), websocket.write(frame("43"))))
    holding.join()
    broadcast("second")
    assert counting.sends[1:] == [
        frame("43") + b"",
        frame('42["new message","second"]'),
    ]
