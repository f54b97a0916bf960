"""A connection handed out by the pool is checked for unread data with one
OS poll, and still refused when it holds a reply or its peer closed
(chat.internals.redis_pool)."""

from __future__ import annotations

import os

import pytest
import redis

from chat.cluster.clients import redis_client
from chat.internals import redis_pool
from chat.internals.redis_pool import ReadinessParser

pytestmark = pytest.mark.e2e


def test_the_apps_clients_check_connections_with_the_os_poll(redis_server):
    client = redis_client(redis_server.url, 2.0)
    client.ping()
    connection = client.connection_pool.get_connection()
    try:
        assert type(connection._parser) is ReadinessParser
        assert connection.can_read() is False
    finally:
        client.connection_pool.release(connection)


def test_a_connection_with_a_reply_left_unread_is_not_handed_out(redis_server):
    """A reply nobody read (a command cut off after its write) would be
    read as the next command's: the pool drops that connection."""
    client = redis_client(redis_server.url, 2.0)
    pool = client.connection_pool
    connection = pool.get_connection()
    connection.send_command("ECHO", "left behind")
    first = connection._sock
    # Wait until the reply is there to be seen (a deadline, not a sleep).
    assert connection._parser.can_read(2.0)
    pool.release(connection)
    again = pool.get_connection()
    try:
        assert again._sock is not first  # reconnected
        assert again.can_read() is False
        again.send_command("ECHO", "mine")
        assert again.read_response() == b"mine"
    finally:
        pool.release(again)


def test_a_connection_whose_redis_closed_it_is_made_again(redis_server):
    client = redis_client(redis_server.url, 2.0)
    pool = client.connection_pool
    connection = pool.get_connection()
    first = connection._sock
    pool.release(connection)
    # Redis closes every client connection; the pooled one now reads EOF.
    admin = redis.Redis.from_url(redis_server.url)
    admin.client_kill_filter(_type="normal", skipme=True)
    with pytest.raises(redis.ConnectionError):
        connection._parser.can_read(2.0)  # waits (a deadline) for the EOF
    again = pool.get_connection()
    try:
        assert again is connection and again._sock is not first
        again.send_command("PING")
        assert again.read_response() in (b"PONG", "PONG", True)
    finally:
        pool.release(again)


def test_the_zero_timeout_check_is_not_redis_pys_poll(redis_server, monkeypatch):
    """redis-py polls through the ``select`` module, which gevent patches
    in the worker; the check here never goes through it."""
    import types

    import redis._parsers.hiredis as hiredis_parser

    def cooperative(*args, **kwargs):
        raise AssertionError("the patched module's poll was used")

    fake = types.SimpleNamespace(poll=cooperative, POLLIN=1)
    client = redis_client(redis_server.url, 2.0)
    client.ping()
    monkeypatch.setattr(hiredis_parser, "select", fake)
    connection = client.connection_pool.get_connection()
    try:
        assert connection.can_read() is False
        assert client.ping() is True
    finally:
        client.connection_pool.release(connection)


def test_a_forked_child_gets_a_pool_of_its_own(redis_server):
    client = redis_client(redis_server.url, 2.0)
    client.ping()
    parent_connection = client.connection_pool.get_connection()
    client.connection_pool.release(parent_connection)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once
        try:
            os.close(read)
            fresh = client.connection_pool.get_connection()
            ok = fresh is not parent_connection and client.ping() is True
            os.write(write, b"1" if ok and redis_pool._pid == os.getpid() else b"0")
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        assert answer.read() == b"1"
    os.waitpid(pid, 0)
    assert client.ping() is True
