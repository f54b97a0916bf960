"""A websocket's reader lets others run after ``YIELD_AFTER_S`` of running
on its own, and owes nothing after it waited (chat.transport.websocket)."""

from __future__ import annotations

import time

import gevent

from chat.transport import websocket as ws
from tests.test_writer_hold import frame, pair  # noqa: F401  (a fixture)


def _others_ran_during(receive) -> bool:
    """Whether a greenlet that was ready got to run while ``receive`` ran."""
    ran = []
    gevent.spawn(ran.append, 1)
    receive()
    return bool(ran)


def test_a_reader_that_ran_too_long_without_waiting_lets_others_run(pair):  # noqa: F811
    websocket, _, client = pair
    client.sendall(frame("42a") + frame("42b"))
    assert websocket.receive() == "42a"  # the clock starts
    deadline = time.perf_counter() + ws.YIELD_AFTER_S * 2
    while time.perf_counter() < deadline:
        pass  # a handler's own work, no wait in it
    assert _others_ran_during(websocket.receive)


def test_a_reader_that_just_waited_goes_on_without_yielding(pair):  # noqa: F811
    websocket, _, client = pair
    client.sendall(frame("42a"))
    assert websocket.receive() == "42a"
    deadline = time.perf_counter() + ws.YIELD_AFTER_S * 2
    while time.perf_counter() < deadline:
        pass
    gevent.sleep(0.001)  # a handler waiting (for Redis): the loop polls
    client.sendall(frame("42b"))
    assert not _others_ran_during(websocket.receive)


def test_a_reader_with_time_left_does_not_yield(pair):  # noqa: F811
    websocket, _, client = pair
    client.sendall(frame("42a") + frame("42b"))
    assert websocket.receive() == "42a"
    assert not _others_ran_during(websocket.receive)
