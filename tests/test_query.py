"""A request's query reads as engine.io reads it, whether or not it had to
be parsed (chat.transport.query)."""

from __future__ import annotations

import urllib.parse

import pytest

from chat.transport.query import query_with

QUERIES = [
    "",
    "EIO=4&transport=websocket",
    "EIO=4&transport=polling&t=PjZ0bTq",
    "EIO=4&transport=websocket&sid=abc.DEF_12",
    "sid=&EIO=4",
    "sid=one&sid=two",
    "%73id=spelled",
    "s%69d=spelled&j=%31",
    "j=0&EIO=4",
    "j=&EIO=4",
    "a=%6A&b=sid",
    "s+id=spaced",
    "EIO=4&t=jsid",
]


@pytest.mark.parametrize("raw", QUERIES)
def test_what_is_asked_for_reads_as_engineio_reads_it(raw):
    environ = {"QUERY_STRING": raw}
    theirs = urllib.parse.parse_qs(raw)
    for names in (("sid",), ("j", "sid")):
        ours = query_with(environ, *names)
        assert {n: ours.get(n) for n in names} == {n: theirs.get(n) for n in names}


def test_a_new_websockets_query_is_not_parsed(monkeypatch):
    def parse(raw):
        raise AssertionError(f"parsed {raw!r}")

    monkeypatch.setattr(urllib.parse, "parse_qs", parse)
    assert query_with({"QUERY_STRING": "EIO=4&transport=websocket"}, "j", "sid") == {}
    assert query_with({}, "sid") == {}
