"""History, missed-message recovery and rooms, on one instance."""

import pytest

from tests.conftest import events_named


def history_of(sock):
    [payload] = events_named(sock, "history")
    return payload


def texts(messages):
    return [m["message"] for m in messages]


def test_history_arrives_right_after_login(login, connect):
    login("Alice").emit("new message", "one")
    carol = connect()
    carol.emit("add user", "Carol")
    assert [p["name"] for p in carol.get_received()] == ["login", "history"]


def test_history_carries_name_text_timestamp_and_increasing_ids(login, connect):
    alice = login("Alice")
    for text in ("one", "two", "three"):
        alice.emit("new message", text)
    carol = connect()
    carol.emit("add user", "Carol")
    history = history_of(carol)
    assert texts(history["messages"]) == ["one", "two", "three"]
    assert {m["username"] for m in history["messages"]} == {"Alice"}
    ids = [tuple(map(int, m["id"].split("-"))) for m in history["messages"]]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert all(m["ts"] > 1_700_000_000_000 for m in history["messages"])
    assert history["dropped"] is False


@pytest.mark.settings(HISTORY_LENGTH=3, RATE_BURST=100)
def test_history_is_limited_to_the_configured_length(login, connect):
    alice = login("Alice")
    for i in range(10):
        alice.emit("new message", f"m{i}")
    bob = connect()
    bob.emit("add user", "Bob")
    assert texts(history_of(bob)["messages"]) == ["m7", "m8", "m9"]


def test_sender_gets_the_id_of_its_message_as_acknowledgement(login):
    alice = login("Alice")
    bob = login("Bob")
    ack = alice.emit("new message", "hi", callback=True)
    assert ack["id"] == events_named(bob, "new message")[0]["id"]


def test_reconnecting_client_gets_exactly_the_missed_messages(login, connect):
    alice = login("Alice")
    bob = login("Bob")
    alice.emit("new message", "before")
    [seen] = events_named(bob, "new message")
    bob.disconnect()
    for text in ("missed 1", "missed 2", "missed 3"):
        alice.emit("new message", text)
    again = connect(auth={"username": "Bob", "lastId": seen["id"]})
    history = history_of(again)
    assert texts(history["messages"]) == ["missed 1", "missed 2", "missed 3"]
    assert history["dropped"] is False
    assert history["since"] == seen["id"]


@pytest.mark.settings(HISTORY_RETAIN=5, RATE_BURST=100)
def test_client_told_when_missed_messages_exceed_retention(login, connect):
    alice = login("Alice")
    alice.emit("new message", "seen")
    bob = connect()
    bob.emit("add user", "Bob")
    last_seen = history_of(bob)["messages"][-1]["id"]
    bob.disconnect()
    for i in range(12):
        alice.emit("new message", f"burst {i}")
    back = connect(auth={"username": "Bob", "lastId": last_seen})
    history = history_of(back)
    assert texts(history["messages"]) == [f"burst {i}" for i in range(7, 12)]
    assert history["dropped"] is True


def test_rooms_isolate_messages_presence_and_typing(login, connect):
    lobby = login("Alice")
    dev = login("Bob", room="dev")
    assert (
        events_named(connect_and_login(connect, "Carol", "dev"), "login")[0]["numUsers"]
        == 2
    )
    lobby.get_received()
    dev.get_received()
    lobby.emit("new message", "lobby only")
    lobby.emit("typing")
    assert events_named(dev, "new message") == []
    assert events_named(dev, "typing") == []
    dev.emit("new message", "dev only")
    assert lobby.get_received() == []


def test_history_is_per_room(login, connect):
    alice = login("Alice", room="dev")
    alice.emit("new message", "in dev")
    lobby_user = connect()
    lobby_user.emit("add user", "Bob")
    assert history_of(lobby_user)["messages"] == []
    dev_user = connect_and_login(connect, "Carol", "dev")
    assert texts(history_of(dev_user)["messages"]) == ["in dev"]


def test_same_name_may_be_used_in_different_rooms(login, connect):
    login("Alice")
    other = connect_and_login(connect, "Alice", "dev")
    assert events_named(other, "login")[0]["room"] == "dev"


def test_invalid_room_is_refused(connect):
    sock = connect()
    sock.emit("add user", "Alice", {"room": "no spaces/allowed"})
    assert events_named(sock, "login error")[0]["reason"] == "invalid_room"


def test_same_person_reclaims_the_name_from_a_stale_connection(login, connect):
    """A page whose network vanished is still "online" until the ping timeout;
    its reconnect carries the login token and takes the name back at once."""
    alice = login("Alice")
    stale = connect()
    stale.emit("add user", "Bob")
    token = events_named(stale, "login")[0]["token"]
    alice.get_received()
    fresh = connect(auth={"username": "Bob", "token": token})
    assert events_named(fresh, "login")[0]["numUsers"] == 2
    assert not stale.is_connected()
    assert alice.get_received() == []  # no "user left", no "user joined"
    fresh.emit("new message", "back")
    assert events_named(alice, "new message")[0]["username"] == "Bob"


def test_a_wrong_token_does_not_take_a_name(login, connect):
    login("Bob")
    thief = connect(auth={"username": "Bob", "token": "x" * 32})
    assert events_named(thief, "login error")[0]["reason"] == "name_taken"


def connect_and_login(connect, name, room):
    sock = connect()
    sock.emit("add user", name, {"room": room})
    return sock
