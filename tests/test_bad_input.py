"""What the official example gets wrong: every bad input gets a clear answer."""

import pytest

from tests.conftest import events_named


def error_reasons(sock, event="chat error"):
    return [p["reason"] for p in events_named(sock, event)]


def test_second_add_user_on_one_connection_changes_nothing(login, connect):
    alice = login("Alice")
    bob = login("Bob")
    alice.get_received()
    bob.emit("add user", "Robert")
    assert error_reasons(bob, "login error") == ["already_logged_in"]
    assert events_named(alice, "user joined") == []
    bob.emit("new message", "still bob")
    assert events_named(alice, "new message")[0]["username"] == "Bob"


@pytest.mark.parametrize("taken", ["Alice", "alice", "  ALICE  "])
def test_name_in_use_is_refused_case_insensitively(login, connect, taken):
    alice = login("Alice")
    other = connect()
    other.emit("add user", taken)
    assert error_reasons(other, "login error") == ["name_taken"]
    assert events_named(alice, "user joined") == []


def test_refused_name_can_try_another(login, connect):
    login("Alice")
    other = connect()
    other.emit("add user", "Alice")
    other.emit("add user", "Alicia")
    assert events_named(other, "login")[0]["username"] == "Alicia"


@pytest.mark.parametrize(
    "name", ["", "   ", "x" * 33, "bell\x07", "line\nbreak", 42, None, ["a"], {"a": 1}]
)
def test_invalid_names_are_refused(connect, name):
    sock = connect()
    sock.emit("add user", name)
    received = sock.get_received()
    assert [p["name"] for p in received] == ["login error"]
    assert received[0]["args"][0]["reason"] == "invalid_name"


def test_name_is_trimmed_and_32_characters_fit(connect):
    sock = connect()
    sock.emit("add user", "  " + "n" * 32 + " ")
    assert events_named(sock, "login")[0]["username"] == "n" * 32


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("", "invalid_message"),
        ("   ", "invalid_message"),
        (7, "invalid_message"),
        (None, "invalid_message"),
        ({"text": "hi"}, "invalid_message"),
        ("x" * 2001, "message_too_long"),
    ],
)
def test_invalid_messages_are_refused_and_not_broadcast(login, message, reason):
    alice = login("Alice")
    bob = login("Bob")
    alice.get_received()
    alice.emit("new message", message)
    assert error_reasons(alice) == [reason]
    assert events_named(bob, "new message") == []


def test_message_of_the_maximum_length_is_delivered(login):
    alice = login("Alice")
    bob = login("Bob")
    alice.emit("new message", "y" * 2000)
    assert events_named(bob, "new message")[0]["message"] == "y" * 2000


@pytest.mark.parametrize("event", ["new message", "typing", "stop typing"])
def test_events_before_login_are_refused(login, connect, event):
    alice = login("Alice")
    stranger = connect()
    stranger.emit(event, "hi")
    assert error_reasons(stranger) == ["not_logged_in"]
    assert alice.get_received() == []


def test_unknown_event_gets_an_error_and_the_connection_stays(login):
    alice = login("Alice")
    bob = login("Bob")
    alice.emit("delete everything", {"all": True})
    assert error_reasons(alice) == ["unknown_event"]
    alice.emit("new message", "still here")
    assert events_named(bob, "new message")[0]["message"] == "still here"


def test_html_is_passed_through_as_text_not_escaped_twice(login):
    alice = login("<b>Al</b>")
    bob = login("Bob")
    alice.emit("new message", "<img src=x onerror=alert(1)>")
    [message] = events_named(bob, "new message")
    assert message == {
        **message,
        "username": "<b>Al</b>",
        "message": "<img src=x onerror=alert(1)>",
    }


@pytest.mark.settings(RATE_BURST=5, RATE_PER_S=0.001)
def test_flooding_client_is_refused_while_others_keep_chatting(connect):
    flooder = connect()
    calm = connect()
    flooder.emit("add user", "Flood")
    calm.emit("add user", "Calm")
    for i in range(20):
        flooder.emit("new message", f"spam {i}")
    # The login spent one token of five: four messages pass, sixteen do not.
    delivered = [m["message"] for m in events_named(calm, "new message")]
    assert delivered == [f"spam {i}" for i in range(4)]
    assert error_reasons(flooder) == ["rate_limited"] * 16
    calm.emit("new message", "I am fine")
    calm_errors = [p for p in calm.get_received() if p["name"] == "chat error"]
    assert calm_errors == []


HANDSHAKE = "/socket.io/?EIO=4&transport=polling"


def test_other_origins_are_refused_by_default(client):
    foreign = client.get(HANDSHAKE, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 400
    same = client.get(HANDSHAKE, headers={"Origin": "http://localhost"})
    assert same.status_code == 200


@pytest.mark.settings(CORS_ORIGINS=["http://chat.example"])
def test_cors_origins_setting_widens_who_may_connect(client):
    allowed = client.get(HANDSHAKE, headers={"Origin": "http://chat.example"})
    assert allowed.status_code == 200
    other = client.get(HANDSHAKE, headers={"Origin": "http://evil.example"})
    assert other.status_code == 400
