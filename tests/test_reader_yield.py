"""A websocket's reader lets others run after ``YIELD_AFTER_S`` of running,
and not before (chat.transport.websocket)."""

from __future__ import annotations

import time

import gevent
import pytest

from chat.transport import websocket as ws
from chat.transport.writer import encode_frame
from tests.serverws import server_websocket


@pytest.fixture
def pair():
    """A server websocket and the client's end of its socket pair."""
    websocket, client, opened = server_websocket()
    yield websocket, None, client
    for each in opened:
        each.close()


def frame(text: str) -> bytes:
    """A text frame (masking plays no part in what is read here)."""
    return encode_frame(text.encode())


def _others_ran_during(receive) -> bool:
    """Whether a greenlet that was ready got to run while ``receive`` ran."""
    ran = []
    gevent.spawn(ran.append, 1)
    receive()
    return bool(ran)


def test_a_reader_that_ran_too_long_without_waiting_lets_others_run(pair):
    websocket, _, client = pair
    client.sendall(frame("42a") + frame("42b"))
    assert websocket.receive() == "42a"  # the clock starts
    deadline = time.perf_counter() + ws.YIELD_AFTER_S * 2
    while time.perf_counter() < deadline:
        pass  # a handler's own work, no wait in it
    assert _others_ran_during(websocket.receive)


def test_a_reader_with_time_left_does_not_yield(pair):
    websocket, _, client = pair
    client.sendall(frame("42a") + frame("42b"))
    assert websocket.receive() == "42a"
    assert not _others_ran_during(websocket.receive)
