"""The chat in a real browser: headless Chromium driven by Playwright.

Each scenario waits on what the page shows and saves a screenshot under
test-artifacts/.
"""

from __future__ import annotations

import pytest

from deploy.procs import Instance, free_port, wait_until
from tests.pages import (
    connection,
    expect,
    log_in,
    logs,
    messages_from,
    send,
    shot,
)

pytestmark = pytest.mark.e2e


def converse(alice, bob):
    """The scenario every deployment must pass: join, type, talk, leave."""
    expect(logs(bob).filter(has_text="there are 2 participants")).to_have_count(1)
    expect(logs(alice).filter(has_text="Bob joined")).to_have_count(1)
    expect(logs(alice).filter(has_text="there are 2 participants")).to_have_count(1)

    alice.locator(".inputMessage").press_sequentially("hel")
    typing = bob.locator(".message.typing", has_text="is typing")
    expect(typing).to_have_count(1)
    expect(typing.locator(".username")).to_have_text("Alice")
    expect(typing).to_have_count(0, timeout=5000)  # gone after a pause

    send(alice, "hello Bob")
    received = messages_from(bob, "Alice")
    expect(received.locator(".messageBody")).to_have_text("hello Bob")
    color = received.locator(".username").evaluate("e => e.style.color")
    own = (
        messages_from(alice, "Alice")
        .locator(".username")
        .evaluate("e => e.style.color")
    )
    assert color and color == own
    send(bob, "hi Alice")
    expect(messages_from(alice, "Bob").locator(".messageBody")).to_have_text("hi Alice")


def test_two_users_chat_on_one_instance(gunicorn, open_page):
    server = gunicorn()
    alice = open_page(server.url, "Alice")
    expect(logs(alice).filter(has_text="there's 1 participant")).to_have_count(1)
    bob = open_page(server.url, "Bob")
    converse(alice, bob)
    shot(alice, "chat")
    bob.context.close()
    expect(logs(alice).filter(has_text="Bob left")).to_have_count(1)
    expect(logs(alice).filter(has_text="there's 1 participant")).to_have_count(2)


def test_two_users_chat_across_instances_through_nginx(cluster, nginx, open_page):
    a, b = cluster(2)
    balancer = nginx([a, b])
    alice = open_page(balancer.url, "Alice")
    bob = open_page(balancer.url, "Bob")
    assert sorted(i.health().json()["localUsers"] for i in (a, b)) == [1, 1]
    converse(alice, bob)
    shot(bob, "cluster")
    bob.context.close()
    expect(logs(alice).filter(has_text="Bob left")).to_have_count(1)


def test_two_users_chat_over_https_through_nginx(
    cluster, nginx, open_page, certificate
):
    a, b = cluster(2)
    balancer = nginx([a, b], tls=certificate)
    alice = open_page(balancer.url, "Alice", ignore_https_errors=True)
    assert alice.url.startswith(balancer.https_url)
    bob = open_page(balancer.https_url, "Bob", ignore_https_errors=True)
    converse(alice, bob)
    transports = alice.evaluate(
        "() => performance.getEntriesByType('resource').map(r => r.name)"
    )
    assert not [t for t in transports if t.startswith("http://")]


def test_long_polling_only_through_nginx(cluster, nginx, open_page):
    a, b = cluster(2)
    balancer = nginx([a, b])
    url = f"{balancer.url}/?transports=polling"
    alice = open_page(url, "Alice")
    bob = open_page(url, "Bob")
    converse(alice, bob)
    transport = alice.evaluate(
        "() => performance.getEntriesByType('resource')"
        ".map(r => r.name).filter(n => n.includes('websocket'))"
    )
    assert transport == []
    shot(alice, "polling")


def test_name_in_use_shows_an_error_and_another_can_be_picked(gunicorn, open_page):
    server = gunicorn()
    open_page(server.url, "Alice")
    page = open_page(server.url)
    page.fill(".usernameInput", "alice")
    page.press(".usernameInput", "Enter")
    expect(page.locator(".loginError")).to_contain_text("already in use")
    expect(page.locator(".login.page")).to_be_visible()
    shot(page, "name-taken")
    log_in(page, "Alicia")
    expect(logs(page).filter(has_text="there are 2 participants")).to_have_count(1)


def test_markup_in_names_and_messages_shows_as_text(gunicorn, open_page):
    server = gunicorn()
    evil_name = "<b>Mallory</b>"
    evil_message = "<img src=x onerror=alert(1)>"
    alice = open_page(server.url, "Alice")
    mallory = open_page(server.url, evil_name)
    send(mallory, evil_message)
    received = alice.locator(".messages .message:not(.typing)").last
    expect(received.locator(".messageBody")).to_have_text(evil_message)
    expect(received.locator(".username")).to_have_text(evil_name)
    expect(logs(alice).filter(has_text=f"{evil_name} joined")).to_have_count(1)
    assert alice.locator(".messages img, .messages b").count() == 0
    assert alice.dialogs == [] and mallory.dialogs == []
    shot(alice, "markup-as-text")


def test_page_reconnects_and_logs_in_again_after_a_server_restart(tmp_path, open_page):
    port = free_port()
    server = Instance(port, tmp_path).start()
    try:
        alice = open_page(server.url, "Alice")
        bob = open_page(server.url, "Bob")
        expect(logs(alice).filter(has_text="Bob joined")).to_have_count(1)
        assert server.terminate(timeout=15) == 0
        # The header says so; the conversation gets no lines about it.
        expect(connection(alice)).to_have_attribute("data-state", "reconnecting")
        expect(connection(alice)).to_contain_text("Reconnecting")
        server = Instance(port, tmp_path).start()
        for page in (alice, bob):
            expect(connection(page)).to_have_attribute(
                "data-state", "connected", timeout=15000
            )
        wait_until(
            lambda: server.health().json()["localUsers"] == 2,
            10,
            "both pages to log in again",
        )
        send(alice, "after the restart")
        expect(messages_from(bob, "Alice").last.locator(".messageBody")).to_have_text(
            "after the restart"
        )
        expect(alice.locator(".chat.page")).to_be_visible()
        shot(bob, "reconnected")
    finally:
        server.stop()


def test_phone_viewport_keeps_input_and_messages_usable(gunicorn, open_page):
    server = gunicorn()
    phone = {
        "viewport": {"width": 390, "height": 844},
        "is_mobile": True,
        "has_touch": True,
    }
    alice = open_page(server.url, "Alice", **phone)
    bob = open_page(server.url, "Bob")
    # Few but long messages: enough to scroll, within the flood limit.
    for i in range(5):
        send(bob, f"paragraph {i}: " + "words that wrap on a narrow screen " * 8)
    send(bob, "a-very-long-word-" * 12)
    expect(messages_from(alice, "Bob")).to_have_count(6)
    box = alice.locator(".inputMessage").bounding_box()
    assert box["y"] + box["height"] <= 844 and box["width"] >= 350
    last = messages_from(alice, "Bob").last
    expect(last).to_be_in_viewport()
    no_sideways_scroll = alice.evaluate(
        "() => document.documentElement.scrollWidth <= window.innerWidth"
    )
    assert no_sideways_scroll
    send(alice, "typed on a phone")
    expect(messages_from(bob, "Alice").locator(".messageBody")).to_have_text(
        "typed on a phone"
    )
    shot(alice, "phone")


def test_dropped_connection_sees_every_message_once_in_order(
    cluster, nginx, open_page, clients
):
    a, b = cluster(2)
    balancer = nginx([a, b])
    alice = open_page(balancer.url, "Alice")
    on_a = a.health().json()["localUsers"] == 1
    home, other = (a, b) if on_a else (b, a)
    bob = clients(other.url)
    bob.login("Bob")
    bob.say("before the drop")
    expect(messages_from(alice, "Bob")).to_have_count(1)

    # Alice's network goes away for a while, and so does her instance.
    alice.context.set_offline(True)
    expect(connection(alice)).to_have_attribute("data-state", "offline")
    assert home.terminate(timeout=15) == 0
    for i in range(3):
        bob.say(f"while away {i}")
    alice.context.set_offline(False)

    expect(connection(alice)).to_have_attribute("data-state", "connected")
    expected = ["before the drop"] + [f"while away {i}" for i in range(3)]
    expect(messages_from(alice, "Bob").locator(".messageBody")).to_have_text(expected)
    bob.say("after the return")
    expect(messages_from(alice, "Bob").locator(".messageBody")).to_have_text(
        [*expected, "after the return"]
    )
    shot(alice, "recovered")


def test_room_from_the_url_keeps_conversations_apart(gunicorn, open_page):
    server = gunicorn()
    lobby = open_page(server.url, "Lena")
    dev = open_page(f"{server.url}/?room=dev", "Dana")
    dev2 = open_page(f"{server.url}/?room=dev", "Dirk")
    expect(logs(dev).filter(has_text="Dirk joined")).to_have_count(1)
    expect(logs(dev2).filter(has_text="there are 2 participants")).to_have_count(1)
    send(dev, "only for dev")
    expect(messages_from(dev2, "Dana").locator(".messageBody")).to_have_text(
        "only for dev"
    )
    send(lobby, "only for the lobby")
    # The lobby's own message is on its page; nothing of dev's reached it.
    expect(messages_from(lobby, "Lena")).to_have_count(1)
    assert messages_from(lobby, "Dana").count() == 0
    assert logs(lobby).filter(has_text="joined").count() == 0
    expect(messages_from(dev2, "Lena")).to_have_count(0)
    shot(dev, "room")


def test_room_names_follow_the_servers_rule_on_the_page(gunicorn, open_page):
    server = gunicorn()
    upper = open_page(f"{server.url}/?room=Dev", "Dora")
    open_page(f"{server.url}/?room=dev", "Dirk")
    # "Dev" is the room "dev": both are in one room.
    expect(logs(upper).filter(has_text="Dirk joined")).to_have_count(1)
    expect(logs(upper).filter(has_text="room dev")).to_have_count(1)
    # An invalid room is explained where another can be picked.
    accented = open_page(f"{server.url}/?room=caf%C3%A9")
    picker = accented.locator(".roomForm")
    expect(picker).to_be_visible()
    expect(picker.locator("label")).to_contain_text("a-z, 0-9")
    expect(accented.locator(".usernameInput")).to_be_hidden()
    accented.fill(".roomInput", "Cafe")
    accented.press(".roomInput", "Enter")
    accented.wait_for_url("**/?room=cafe")
    expect(accented.locator(".roomHint")).to_have_text("You are joining room cafe.")
    log_in(accented, "Carla")
    expect(accented.locator(".roomName")).to_have_text("Room cafe")


# A page written for the Node socket.io server: it loads the client from the
# server's own path, and speaks the example's contract.
NODE_STYLE_PAGE = """<!doctype html><html><body><ul id="log"></ul>
<script src="/socket.io/socket.io.js"></script>
<script>
  const socket = io();
  const say = (text) =>
    document.getElementById("log").insertAdjacentHTML("beforeend", `<li>${text}</li>`);
  socket.on("login", (data) => {
    say(`login ${data.numUsers}`);
    socket.emit("new message", "hello from a Node-style page");
  });
  socket.emit("add user", "Nodey");
</script></body></html>"""


def test_a_page_written_for_the_node_server_loads_the_client_and_chats(
    gunicorn, browser, clients
):
    server = gunicorn()
    alice = clients(server.url)
    alice.login("Alice")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.route(
            f"{server.url}/node-style",
            lambda route: route.fulfill(body=NODE_STYLE_PAGE, content_type="text/html"),
        )
        page.goto(f"{server.url}/node-style")
        expect(page.locator("#log li")).to_have_text(["login 2"])
        message = alice.wait_for("new message", lambda m: m["username"] == "Nodey")
        assert message["message"] == "hello from a Node-style page"
    finally:
        context.close()
