"""Hostile input that needs no real server: every answer is bounded and local."""

import pytest

from tests.conftest import events_named, names_of


def reasons(sock, event="chat error"):
    return [p["reason"] for p in events_named(sock, event)]


@pytest.mark.parametrize("reserved", ["disconnect", "connect", "connect_error"])
def test_reserved_event_names_from_a_client_change_nothing(login, reserved):
    alice = login("Alice")
    bob = login("Bob")
    alice.get_received()
    bob.emit(reserved, {"fake": True})
    assert reasons(bob) == ["unknown_event"]
    assert alice.get_received() == []
    bob.emit("new message", "still in the room")
    assert events_named(alice, "new message")[0]["username"] == "Bob"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Zoë", "Zoe\u0308"),
        ("ＡＬＩＣＥ", "alice"),
        ("ﬁona", "FIONA"),
        ("Straße", "STRASSE"),
    ],
)
def test_look_alike_spellings_of_one_name_are_one_name(login, connect, first, second):
    login(first)
    other = connect()
    other.emit("add user", second)
    assert reasons(other, "login error") == ["name_taken"]


@pytest.mark.parametrize(
    "name",
    [
        "\u3164",  # Hangul filler: NFKC makes it U+1160, still invisible
        "a\u200bb",  # zero-width space
        "x\u202ey",  # right-to-left override
        "\u00ad",  # soft hyphen
        "\u3000\u3000",  # ideographic spaces only
        "tag\U000e0041",
    ],
)
def test_invisible_or_blank_names_are_refused(connect, name):
    sock = connect()
    sock.emit("add user", name)
    assert reasons(sock, "login error") == ["invalid_name"]


def test_name_is_stored_in_its_normalised_form(connect):
    sock = connect()
    sock.emit("add user", "ＡＬＩＣＥ")
    assert events_named(sock, "login")[0]["username"] == "ALICE"


@pytest.mark.parametrize(
    ("room", "expected"),
    [("Dev", "dev"), ("  team-1_a ", "team-1_a"), ("x" * 32, "x" * 32)],
)
def test_room_names_are_trimmed_and_lower_cased(connect, room, expected):
    sock = connect()
    sock.emit("add user", "Alice", {"room": room})
    assert events_named(sock, "login")[0]["room"] == expected


@pytest.mark.parametrize("room", ["café", "ｌｏｂｂｙ", "a b", "x" * 33, "\u212aelvin"])
def test_room_names_outside_the_rule_are_refused(connect, room):
    sock = connect()
    sock.emit("add user", "Alice", {"room": room})
    assert reasons(sock, "login error") == ["invalid_room"]


@pytest.mark.settings(MAX_ROOMS=2)
def test_rooms_are_capped(connect):
    for room in ("one", "two"):
        connect().emit("add user", "Alice", {"room": room})
    third = connect()
    third.emit("add user", "Alice", {"room": "three"})
    assert reasons(third, "login error") == ["too_many_rooms"]
    again = connect()
    again.emit("add user", "Bob", {"room": "one"})
    assert "login" in names_of(again.get_received())


@pytest.mark.settings(HISTORY_CATCHUP_MAX=5, RATE_BURST=100)
def test_catch_up_is_capped_and_says_so(login, connect):
    alice = login("Alice")
    for i in range(20):
        alice.emit("new message", f"m{i}")
    bob = connect()
    bob.emit("add user", "Bob", {"lastId": "1-0"})
    [history] = events_named(bob, "history")
    assert history["dropped"] is True
    newest = [m["message"] for m in history["messages"]]
    assert newest == [f"m{i}" for i in range(15, 20)]


@pytest.mark.parametrize("last_id", ["x", "", "12", "-1-2", "1-x", "٣-1", 7, {"a": 1}])
def test_malformed_last_id_is_no_last_id(login, connect, last_id):
    alice = login("Alice")
    alice.emit("new message", "hello")
    bob = connect()
    bob.emit("add user", "Bob", {"lastId": last_id})
    [history] = events_named(bob, "history")
    assert history["since"] is None and history["dropped"] is False
    assert [m["message"] for m in history["messages"]] == ["hello"]


@pytest.mark.settings(RATE_BURST=3, RATE_PER_S=0.001)
def test_typing_does_not_spend_the_message_budget(login):
    alice = login("Alice")
    bob = login("Bob")
    for _ in range(8):
        alice.emit("typing")
        alice.emit("stop typing")
    alice.emit("new message", "typed a lot, still sent")
    assert events_named(bob, "new message")[0]["message"] == "typed a lot, still sent"


PUBLIC = {"REMOTE_ADDR": "203.0.113.9"}


def test_public_health_check_says_only_the_status(client):
    public = client.get("/healthz", environ_base=PUBLIC)
    assert public.status_code == 200 and public.get_json() == {"status": "ok"}
    local = client.get("/healthz")
    assert {"instance", "pid", "mode"} <= set(local.get_json())


def test_metrics_are_for_internal_networks_only(client):
    assert client.get("/metrics", environ_base=PUBLIC).status_code == 404
    assert client.get("/metrics").status_code == 200


@pytest.mark.settings(TRUSTED_PROXIES=["127.0.0.1"])
def test_forwarded_for_is_believed_only_from_trusted_proxies(client):
    via_proxy = {"X-Forwarded-For": "198.51.100.7"}
    assert client.get("/metrics", headers=via_proxy).status_code == 404
    spoofed = {"REMOTE_ADDR": "203.0.113.9", "HTTP_X_FORWARDED_FOR": "127.0.0.1"}
    assert client.get("/metrics", environ_base=spoofed).status_code == 404


def test_unknown_host_is_refused(client):
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/", headers={"Host": "127.0.0.1:5050"}).status_code == 200


@pytest.mark.settings(ALLOWED_HOSTS=["chat.example"])
def test_allowed_hosts_setting_names_the_hosts(client):
    assert client.get("/", headers={"Host": "chat.example"}).status_code == 200
    assert client.get("/", headers={"Host": "localhost"}).status_code == 400


def test_jsonp_polling_is_off(client):
    answer = client.get("/socket.io/?EIO=4&transport=polling&j=0")
    assert answer.status_code == 400


def test_error_answers_are_not_sniffed_and_do_not_echo_input(client, caplog):
    answer = client.get("/socket.io/?EIO=4&transport=polling&sid=<script>x</script>")
    assert answer.status_code == 400
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert b"<script>" not in answer.data
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert client.get("/").headers["X-Content-Type-Options"] == "nosniff"


def test_a_forged_address_is_never_remembered_and_a_real_one_is_parsed_once():
    """Peers are parsed from a bounded memory of recent addresses; text that
    is no address (a forwarded header can hold anything) stays out of it."""
    from chat.transport.clientaddr import _remembered, client_key, parse_address

    assert parse_address("192.0.2.7") is parse_address("192.0.2.7")
    before = _remembered.cache_info().currsize
    for junk in ("x" * 10_000, "1.2.3.4" + " " * 100):
        with pytest.raises(ValueError):
            parse_address(junk)
        assert client_key(junk) == junk  # counted as it is, as before
    assert _remembered.cache_info().currsize == before
    assert _remembered.cache_info().maxsize == 4096
    assert client_key("2001:db8::1:2") == "2001:db8::/64"
