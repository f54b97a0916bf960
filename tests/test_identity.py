"""Your name and your messages are yours: nobody takes them over, hides them
or forges them (unit tests on the Flask-SocketIO test client)."""

from __future__ import annotations

import pytest

from chat.messages.entries import client_id_key, is_entry_id
from chat.validation import BLANK_GLYPHS, blank_glyphs, name_key
from chat.web.bundle import none_match
from chat.web.guards import _host_name
from tests.conftest import events_named


# -- names that show who is speaking -------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["\u2800", "\u2800\u2800\u2800", "\U0001d159", "\u3164", "a" + "\u0301" * 32],
)
def test_names_that_render_blank_or_stack_marks_are_refused(connect, name):
    sock = connect()
    sock.emit("add user", name)
    (error,) = events_named(sock, "login error")
    assert error["reason"] == "invalid_name"


@pytest.mark.parametrize("look_alike", ["Alice\u2800", "\u2800Alice", "Alice\u3164"])
def test_a_name_with_a_blank_glyph_is_the_same_name(login, connect, look_alike):
    login("Alice")
    other = connect()
    other.emit("add user", look_alike)
    assert [e["reason"] for e in events_named(other, "login error")] == ["name_taken"]


@pytest.mark.parametrize("name", ["Zoë", "Nguyễn", "李小龍", "😀", "ann:x"])
def test_real_names_of_every_script_are_accepted(connect, name):
    sock = connect()
    sock.emit("add user", name)
    assert events_named(sock, "login")[0]["username"] == name


def test_the_blank_glyph_table_is_what_the_unicode_data_says():
    """BLANK_GLYPHS is derived from the Unicode names (fillers, blanks,
    spaces that are letters or symbols); a new Unicode version in a new
    Python shows up here."""
    assert blank_glyphs() == BLANK_GLYPHS
    assert name_key("Alice\u2800") == name_key("alice")


def test_a_name_key_drops_exactly_the_characters_that_show_nothing():
    """The one-pass removal in ``name_key`` takes out every blank glyph and
    default-ignorable character and nothing else (every code point)."""
    from chat.validation import _BLANK_OR_INVISIBLE, _is_blank

    every = [chr(code) for code in range(0x110000)]
    dropped = {ch for ch in every if _BLANK_OR_INVISIBLE.fullmatch(ch)}
    assert dropped == {ch for ch in every if _is_blank(ch)}
    assert not any(ch.isascii() for ch in dropped)
    assert name_key("Zo\u200bë\u2800 \u3164 Li") == name_key("zoë li")


# -- messages -----------------------------------------------------------------
def test_a_client_id_never_reaches_another_user(login, connect):
    alice = login("Alice")
    bob = login("Bob")
    alice.emit("new message", "mine", {"clientId": "alice-1"}, callback=True)
    (seen,) = events_named(bob, "new message")
    assert "clientId" not in seen and seen["message"] == "mine"
    late = connect()
    late.emit("add user", "Carol")
    (history,) = events_named(late, "history")
    assert [m["message"] for m in history["messages"]] == ["mine"]
    assert all("clientId" not in m for m in history["messages"])


def test_a_copied_client_id_changes_nothing_for_its_owner(login):
    alice = login("Alice")
    mallory = login("Mallory")
    first = alice.emit("new message", "hello", {"clientId": "c-1"}, callback=True)
    forged = mallory.emit("new message", "gotcha", {"clientId": "c-1"}, callback=True)
    assert forged["id"] != first["id"]
    assert [m["message"] for m in events_named(alice, "new message")] == ["gotcha"]


def test_dedup_keys_of_different_senders_never_collide(login):
    """``ann`` with ``x:1`` and ``ann:x`` with ``1`` are two messages."""
    assert client_id_key("r", "ann", "x:1") != client_id_key("r", "ann:x", "1")
    ann = login("ann")
    annx = login("ann:x")
    one = ann.emit("new message", "from ann", {"clientId": "x:1"}, callback=True)
    two = annx.emit("new message", "from ann:x", {"clientId": "1"}, callback=True)
    assert one["id"] != two["id"]


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1-0", True),
        (f"{2**64 - 1}-{2**64 - 1}", True),
        (f"{2**64}-0", False),
        (f"1-{2**64}", False),
        ("99999999999999999999999999-0", False),
        ("１-0", False),
    ],
)
def test_ids_outside_redis_range_are_no_last_id(value, expected):
    assert is_entry_id(value) is expected


# -- HTTP ---------------------------------------------------------------------
def test_the_page_cannot_be_framed_by_other_sites(client):
    page = client.get("/")
    policy = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'self'" in policy
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["X-Frame-Options"] == "SAMEORIGIN"


@pytest.mark.parametrize(
    "host, name",
    [
        ("[::1]:5050", "::1"),
        ("[::1]", "::1"),
        ("localhost:5050", "localhost"),
        ("[::1]evil.example", None),
        ("[::1]:5050evil", None),
        ("localhost:evil", None),
    ],
)
def test_a_host_is_a_name_and_at_most_a_port(host, name):
    assert _host_name(host) == name


def test_a_host_with_anything_after_the_bracket_is_refused(client):
    assert client.get("/", headers={"Host": "[::1]evil.example"}).status_code == 400
    assert client.get("/", headers={"Host": "[::1]:5050"}).status_code == 200


@pytest.mark.parametrize(
    "header, matches",
    [
        ('"a"', True),
        ('W/"a"', True),
        ('"b", W/"a"', True),
        ("*", True),
        ('"b"', False),
        ('"a', False),
    ],
)
def test_if_none_match_compares_weakly_and_reads_lists(header, matches):
    assert none_match(header, '"a"') is matches


@pytest.mark.parametrize("query", ["&sid=", "&xsid=1", "&sid", "&sids=p1.x"])
def test_new_sessions_are_refused_while_draining_whatever_the_query(app, client, query):
    app.extensions["chat"].draining = True
    answer = client.get(f"/socket.io/?EIO=4&transport=polling{query}")
    assert answer.status_code == 503
