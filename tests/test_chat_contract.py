"""The socket.io chat example's wire contract, on one instance."""

import pytest

from tests.conftest import events_named


def received(sock):
    return [
        (p["name"], p["args"][0] if p["args"] else None) for p in sock.get_received()
    ]


def test_add_user_answers_login_with_user_count(connect):
    alice = connect()
    alice.emit("add user", "Alice")
    login = events_named(alice, "login")
    assert login[0]["numUsers"] == 1
    assert login[0]["username"] == "Alice"


def test_second_user_is_announced_to_the_first_with_count(login):
    alice = login("Alice")
    bob = login("Bob")
    assert received(alice) == [("user joined", {"username": "Bob", "numUsers": 2})]
    assert received(bob) == []


def test_login_count_includes_everyone_online(login, connect):
    login("Alice")
    login("Bob")
    carol = connect()
    carol.emit("add user", "Carol")
    assert events_named(carol, "login")[0]["numUsers"] == 3


def test_second_user_sees_first_users_message(login):
    alice = login("Alice")
    bob = login("Bob")
    alice.get_received()
    alice.emit("new message", "hello bob")
    [message] = events_named(bob, "new message")
    assert (message["username"], message["message"]) == ("Alice", "hello bob")
    assert events_named(alice, "new message") == []


def test_typing_and_stop_typing_reach_the_others_only(login):
    alice = login("Alice")
    bob = login("Bob")
    alice.get_received()
    alice.emit("typing")
    alice.emit("stop typing")
    assert received(bob) == [
        ("typing", {"username": "Alice"}),
        ("stop typing", {"username": "Alice"}),
    ]
    assert received(alice) == []


def test_user_left_is_announced_with_the_new_count(login):
    alice = login("Alice")
    bob = login("Bob")
    alice.get_received()
    bob.disconnect()
    assert received(alice) == [("user left", {"username": "Bob", "numUsers": 1})]


def test_count_goes_up_and_down_as_users_come_and_go(login, connect):
    alice = login("Alice")
    bob = login("Bob")
    bob.disconnect()
    carol = connect()
    carol.emit("add user", "Carol")
    assert events_named(carol, "login")[0]["numUsers"] == 2
    counts = [p["numUsers"] for p in events_named(alice, "user joined")]
    assert counts == [2, 2]


def test_a_connection_that_never_logged_in_leaves_silently(login, connect):
    alice = login("Alice")
    lurker = connect()
    lurker.disconnect()
    assert received(alice) == []


def test_login_lists_who_is_online(login, connect):
    login("bob")
    login("Alice")
    carol = connect()
    carol.emit("add user", "carol")
    assert events_named(carol, "login")[0]["users"] == ["Alice", "bob", "carol"]


def test_login_through_connect_auth_needs_no_add_user(connect, login):
    alice = login("Alice")
    bob = connect(auth={"username": "Bob"})
    assert events_named(bob, "login")[0]["numUsers"] == 2
    assert events_named(alice, "user joined") == [{"username": "Bob", "numUsers": 2}]


def test_healthz_answers_ok_as_json(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json["status"] == "ok"
    assert response.json["mode"] == "single"


def test_page_serves_the_chat_with_its_own_socketio_client(client):
    page = client.get("/").get_data(as_text=True)
    assert "What's your nickname?" in page
    assert "/static/vendor/socket.io.min.js" in page
    assert "//cdn" not in page


@pytest.mark.settings(MAX_USERS_LISTED=2)
def test_login_omits_the_list_of_names_in_big_rooms(connect):
    socks = [connect() for _ in range(3)]
    for i, sock in enumerate(socks):
        sock.emit("add user", f"user{i}")
    logins = [events_named(sock, "login")[0] for sock in socks]
    assert [login["users"] for login in logins] == [["user0"], ["user0", "user1"], None]
    assert logins[2]["numUsers"] == 3
