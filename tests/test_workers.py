"""Readers woken by their sockets run in reused greenlets that behave like
new ones (chat.transport.workers)."""

from __future__ import annotations

import contextvars

import gevent
import gevent.event
import gevent.socket

from chat.transport import workers

VAR = contextvars.ContextVar("VAR", default="unset")


def in_hub(function, argument) -> None:
    """Hand a job to a worker from the hub, as a socket's watcher does, and
    let the loop run it."""
    gevent.get_hub().loop.run_callback(workers.run_now, function, argument)
    gevent.sleep(0)


def test_a_finished_worker_takes_the_next_job_instead_of_a_new_greenlet():
    ran = []
    in_hub(ran.append, 1)
    started = workers.started
    for n in range(2, 50):
        in_hub(ran.append, n)
    assert ran == list(range(1, 50))
    assert workers.started == started
    assert workers.idle_workers() >= 1


def test_a_job_that_waits_lets_others_run_and_its_worker_is_not_shared():
    order = []

    def slow(name):
        order.append(f"{name} starts")
        gevent.sleep(0.01)
        order.append(f"{name} ends")

    in_hub(slow, "a")
    in_hub(slow, "b")
    gevent.sleep(0.1)
    assert order == ["a starts", "b starts", "a ends", "b ends"]


def test_nothing_a_job_sets_in_a_context_variable_reaches_the_next():
    seen = []

    def sets(value):
        seen.append(VAR.get())
        VAR.set(value)

    for value in ("first", "second", "third"):
        in_hub(sets, value)
    assert seen == ["unset", "unset", "unset"]


def test_at_most_max_idle_workers_wait_after_a_burst(monkeypatch):
    monkeypatch.setattr(workers, "MAX_IDLE", 3)
    release = gevent.event.Event()
    for _ in range(10):
        in_hub(lambda _: release.wait(5), None)
    release.set()
    gevent.sleep(0.05)
    assert workers.idle_workers() <= 3


def test_a_worker_woken_by_a_timeout_its_job_left_running_leaves_the_pool():
    timeouts = []

    def leaves_a_timeout(_):
        timeouts.append(gevent.Timeout.start_new(0.01))

    in_hub(leaves_a_timeout, None)
    idle = workers.idle_workers()
    gevent.sleep(0.05)  # the timeout fires into the waiting worker
    assert workers.idle_workers() == idle - 1
    ran = []
    in_hub(ran.append, "still served")
    assert ran == ["still served"]


def test_an_exception_a_job_lets_out_reaches_the_hub_and_ends_its_worker(
    monkeypatch,
):
    errors = []

    def handle_error(context, kind, value, tb):
        errors.append(value)

    monkeypatch.setattr(gevent.get_hub(), "handle_error", handle_error)

    def fails(_):
        raise RuntimeError("boom")

    idle = workers.idle_workers()
    in_hub(fails, None)
    gevent.sleep(0.01)
    assert [str(e) for e in errors] == ["boom"]
    assert workers.idle_workers() <= idle


def test_start_soon_runs_on_the_loops_next_turn_in_a_reused_worker():
    ran = []
    in_hub(ran.append, "warm")
    started = workers.started
    workers.start_soon(lambda: ran.append("soon"))
    assert ran == ["warm"]  # not before this greenlet yields
    gevent.sleep(0)
    assert ran == ["warm", "soon"]
    assert workers.started == started


def test_a_worker_of_another_loop_is_never_handed_a_job():
    """A forked child inherits the module's list: only workers of this
    process's own hub are used."""
    import greenlet as greenlet_module

    woken = []
    stranger = greenlet_module.greenlet(woken.append)  # parent: not the hub
    workers._idle.append(stranger)
    ran = []
    in_hub(ran.append, "mine")
    assert ran == ["mine"]
    assert woken == []
    assert stranger not in workers._idle


def test_each_connection_is_handled_in_a_waiting_worker_not_a_new_greenlet(app):
    """The server hands every accepted connection to a worker greenlet
    (``ChatWSGIServer.do_handle``): connections one after another share
    one, where gevent's pool would start a greenlet for each."""
    from gevent.pool import Pool

    from chat.transport.handler import handler_class
    from chat.transport.server import ChatWSGIServer
    from chat.transport.writer import counts

    handled_in = []
    request = b"GET / HTTP/1.1\r\nHost: chat\r\nConnection: close\r\n\r\n"

    def wsgi(environ, start_response):
        handled_in.append(gevent.getcurrent())  # kept: no id is reused
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = ChatWSGIServer(
        ("127.0.0.1", 0),
        application=wsgi,
        spawn=Pool(100),
        handler_class=handler_class(app.config),
        log=None,
    )
    open_before = counts.connections
    server.start()
    try:
        for _ in range(20):
            with gevent.socket.create_connection(server.address) as sock:
                sock.sendall(request)
                answer = b""
                while chunk := sock.recv(4096):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")
    finally:
        server.stop()
    assert len(handled_in) == 20
    assert len({id(greenlet) for greenlet in handled_in}) <= 2
    assert counts.connections == open_before
