"""The page people chat in, driven as people do: what each of them sees.

Message states, the outbox, a duplicated tab, who is online, the header, a
phone, the keyboard, accessibility (axe-core) and a new release.
"""

from __future__ import annotations

import json

import pytest

from deploy.procs import ROOT, Instance, free_port
from tests.pages import (
    SocketIOBlock,
    connection,
    expect,
    log_in,
    logs,
    messages_from,
    send,
    shot,
)

pytestmark = pytest.mark.e2e

PHONE = {
    "viewport": {"width": 390, "height": 844},
    "is_mobile": True,
    "has_touch": True,
}
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"


def own(page):
    return page.locator(".messages .message.own")


def people(page):
    return page.locator(".peopleList .person")


def test_a_flood_of_messages_arrives_in_order_and_each_shows_as_sent(
    gunicorn, open_page
):
    # A small budget, so that the burst outruns it: the page waits and
    # sends again rather than losing or failing a message.
    server = gunicorn({"RATE_BURST": "5", "RATE_PER_S": "5"})
    alice = open_page(server.url, "Alice")
    bob = open_page(server.url, "Bob")
    texts = [f"quick {i}" for i in range(25)]
    for text in texts[:3]:
        # Typed key by key: typing notices have their own budget.
        alice.locator(".inputMessage").press_sequentially(text)
        alice.press(".inputMessage", "Enter")
    for text in texts[3:]:
        send(alice, text)
    expect(own(alice)).to_have_count(25)
    expect(own(alice).locator(".messageBody")).to_have_text(texts)
    expect(own(alice).and_(alice.locator('[data-state="stored"]'))).to_have_count(
        25, timeout=20_000
    )
    expect(messages_from(bob, "Alice").locator(".messageBody")).to_have_text(texts)
    assert logs(alice).filter(has_text="not").count() == 0
    # Every message shows its time, one's own included.
    for page in (alice, bob):
        times = page.locator(".messages .message:not(.typing) .time")
        assert all(t.strip() for t in times.all_inner_texts())


def test_an_over_long_message_is_never_shown_as_sent(gunicorn, open_page):
    server = gunicorn()
    alice = open_page(server.url, "Alice")
    bob = open_page(server.url, "Bob")
    pasted = "x" * 2001
    alice.fill(".inputMessage", pasted)
    expect(alice.locator(".messageHint")).to_contain_text("1 character too long")
    alice.press(".inputMessage", "Enter")
    # Kept, whole, for the user to shorten; nothing went out.
    assert alice.input_value(".inputMessage") == pasted
    expect(own(alice)).to_have_count(0)

    # If the server refuses anyway (its limit is what counts), the refusal is
    # on that message, and nobody else saw it.
    alice.evaluate(
        "() => document.querySelector('meta[name=max-message-chars]').content = '5000'"
    )
    alice.press(".inputMessage", "Enter")
    expect(own(alice)).to_have_attribute("data-state", "failed")
    expect(own(alice).locator(".status")).to_have_text(
        "not sent: A message is at most 2000 characters."
    )
    send(alice, "short one")
    expect(messages_from(bob, "Alice").locator(".messageBody")).to_have_text(
        ["short one"]
    )


def test_messages_typed_offline_wait_survive_a_reload_and_go_out_in_order(
    gunicorn, open_page
):
    # Alice's name is kept for her while she is away (LEAVE_GRACE_S).
    server = gunicorn({"LEAVE_GRACE_S": "60"})
    # Long-polling, so that the test can hold socket.io back across a reload.
    alice = open_page(f"{server.url}/?transports=polling", "Alice")
    bob = open_page(server.url, "Bob")
    alice.context.set_offline(True)
    expect(connection(alice)).to_have_attribute("data-state", "offline")
    send(alice, "typed offline 1")
    send(alice, "typed offline 2")
    expect(own(alice).locator(".status")).to_have_text(
        ["waiting for the connection"] * 2
    )
    # Back online, but socket.io still cannot get through; then a reload.
    block = SocketIOBlock(alice.context)
    alice.context.set_offline(False)
    alice.reload()
    expect(alice.locator(".chat.page")).to_be_visible()
    expect(own(alice).locator(".messageBody")).to_have_text(
        ["typed offline 1", "typed offline 2"]
    )
    expect(own(alice).and_(alice.locator('[data-state="pending"]'))).to_have_count(2)
    shot(alice, "outbox-pending")
    block.lift()
    expect(connection(alice)).to_have_attribute("data-state", "connected")
    expect(own(alice).and_(alice.locator('[data-state="stored"]'))).to_have_count(2)
    expect(messages_from(bob, "Alice").locator(".messageBody")).to_have_text(
        ["typed offline 1", "typed offline 2"]
    )
    # Alice came back within the grace: nobody was told she left or joined.
    assert logs(bob).filter(has_text="Alice left").count() == 0
    assert logs(bob).filter(has_text="Alice joined").count() == 0


def test_a_duplicated_tab_pauses_the_original_which_can_take_the_name_back(
    gunicorn, open_page
):
    server = gunicorn()
    first = open_page(server.url, "Alice")
    bob = open_page(server.url, "Bob")
    # A duplicated tab starts with a copy of the original's sessionStorage.
    storage = first.evaluate("() => JSON.stringify(Object.entries(sessionStorage))")
    second = first.context.new_page()
    second.add_init_script(
        f"for (const [k, v] of {storage}) sessionStorage.setItem(k, v);"
    )
    second.goto(server.url)
    expect(connection(second)).to_have_attribute("data-state", "connected")
    expect(first.locator(".takenOver")).to_be_visible()
    expect(first.locator(".takenOver")).to_contain_text("another tab or window")
    expect(first.locator(".inputMessage")).to_be_disabled()
    expect(connection(first)).to_have_attribute("data-state", "paused")
    send(second, "from the new tab")
    expect(messages_from(bob, "Alice").locator(".messageBody")).to_have_text(
        ["from the new tab"]
    )
    shot(first, "taken-over")

    first.click(".takeBack")
    expect(connection(first)).to_have_attribute("data-state", "connected")
    expect(first.locator(".inputMessage")).to_be_enabled()
    expect(second.locator(".takenOver")).to_be_visible()
    send(first, "back in the first tab")
    expect(messages_from(bob, "Alice").locator(".messageBody")).to_have_text(
        ["from the new tab", "back in the first tab"]
    )
    assert logs(bob).filter(has_text="Alice").count() == 0


def test_who_is_online_follows_the_room_and_a_reload_is_silent(gunicorn, open_page):
    server = gunicorn({"LEAVE_GRACE_S": "3"})
    alice = open_page(f"{server.url}/?room=Team", "Alice")
    expect(alice.locator(".roomName")).to_have_text("Room team")
    bob = open_page(f"{server.url}/?room=team", "Bob")
    carol = open_page(f"{server.url}/?room=team", "Carol")
    expect(people(alice)).to_have_text(["Alice (you)", "Bob", "Carol"])
    expect(people(carol)).to_have_text(["Alice", "Bob", "Carol (you)"])
    expect(alice.locator(".peopleCount")).to_have_text("(3)")

    bob.reload()
    expect(connection(bob)).to_have_attribute("data-state", "connected")
    expect(people(bob)).to_have_text(["Alice", "Bob (you)", "Carol"])
    carol.context.close()  # the tab is closed: gone after the grace
    expect(logs(alice).filter(has_text="Carol left")).to_have_count(1)
    expect(people(alice)).to_have_text(["Alice (you)", "Bob"])
    # Bob's reload showed nobody a leave or a join.
    assert logs(alice).filter(has_text="Bob left").count() == 0
    expect(logs(alice).filter(has_text="Bob joined")).to_have_count(1)

    # A newcomer sees the conversation so far set apart from what is new.
    send(alice, "before Dave")
    expect(messages_from(bob, "Alice")).to_have_count(1)
    dave = open_page(f"{server.url}/?room=team", "Dave")
    expect(dave.locator(".log.divider").first).to_have_text("earlier messages")
    expect(dave.locator(".message.history .messageBody")).to_have_text(["before Dave"])
    shot(dave, "history-divider")


def run_axe(page) -> list[dict]:
    """Serious and critical violations axe-core finds in the page as it is,
    once new lines have faded in (contrast is measured with opacity)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('.messages li')]"
        ".every(e => getComputedStyle(e).opacity === '1')"
    )
    # Evaluated by the test driver: the page's Content-Security-Policy
    # (rightly) refuses an inline script tag.
    page.evaluate(AXE.read_text())
    result = page.evaluate("async () => JSON.stringify(await axe.run(document))")
    return [
        {"id": v["id"], "help": v["help"], "nodes": [n["html"] for n in v["nodes"]]}
        for v in json.loads(result)["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_the_page_is_accessible_and_usable_by_keyboard_alone(
    gunicorn, open_page, device
):
    server = gunicorn()
    options = PHONE if device == "phone" else {}
    bob = open_page(server.url, "Bob")
    alice = open_page(server.url, **options)
    assert run_axe(alice) == []
    # The nickname field has the focus; Enter logs in; the message field
    # has the focus; Enter sends.
    alice.keyboard.type("Alice")
    alice.keyboard.press("Enter")
    expect(alice.locator(".chat.page")).to_be_visible()
    alice.keyboard.type("typed without a mouse")
    alice.keyboard.press("Enter")
    expect(messages_from(bob, "Alice").locator(".messageBody")).to_have_text(
        ["typed without a mouse"]
    )
    send(bob, "hello Alice")
    expect(messages_from(alice, "Bob")).to_have_count(1)
    assert run_axe(alice) == []
    shot(alice, f"page-{device}")
    if device == "phone":
        # Who is online is a drawer, opened from the header.
        expect(alice.locator(".people")).to_be_hidden()
        toggle = alice.locator(".peopleToggle")
        toggle.focus()
        alice.keyboard.press("Enter")
        expect(toggle).to_have_attribute("aria-expanded", "true")
        expect(people(alice)).to_have_text(["Alice (you)", "Bob"])
        assert run_axe(alice) == []
        box = alice.locator(".inputMessage").bounding_box()
        assert box["y"] + box["height"] <= 844 and box["width"] >= 350
        shot(alice, "page-phone-people")
    else:
        expect(people(alice)).to_have_text(["Alice (you)", "Bob"])


def test_an_open_page_offers_a_reload_when_a_new_release_serves(tmp_path, open_page):
    port = free_port()
    server = Instance(port, tmp_path, {"RELEASE": "first"}).start()
    try:
        alice = open_page(server.url, "Alice")
        expect(alice.locator(".releaseNotice")).to_be_hidden()
        assert server.terminate(timeout=15) == 0
        server = Instance(port, tmp_path, {"RELEASE": "second"}).start()
        notice = alice.locator(".releaseNotice")
        expect(notice).to_be_visible(timeout=15_000)
        expect(notice).to_contain_text("new version")
        alice.click(".releaseNotice .reload")
        expect(alice.locator('meta[name="release"]')).to_have_attribute(
            "content", "second"
        )
        expect(connection(alice)).to_have_attribute("data-state", "connected")
        expect(alice.locator(".releaseNotice")).to_be_hidden()
    finally:
        server.stop()


def test_log_in_helper_still_matches_the_page(gunicorn, open_page):
    """The nickname screen names the room before anyone types."""
    server = gunicorn()
    page = open_page(f"{server.url}/?room=dev")
    expect(page.locator(".roomHint")).to_have_text("You are joining room dev.")
    log_in(page, "Dana")
    expect(page.locator(".roomName")).to_have_text("Room dev")
    expect(logs(page).first).to_have_text("Welcome to Socket.IO Chat, room dev")
    lobby = open_page(server.url, "Lena")
    expect(logs(lobby).first).to_have_text("Welcome to Socket.IO Chat")


def test_a_copied_client_id_changes_nothing_on_its_owners_page(gunicorn, open_page):
    """Mallory somehow has the clientId of Alice's message and sends her own
    message with it: Alice's page shows Mallory's message as Mallory's, and
    Alice's own line keeps its text, its id and its time."""
    from tests.support import ChatClient

    server = gunicorn()
    alice = open_page(server.url, "Alice")
    send(alice, "hello from Alice")
    mine = own(alice)
    expect(mine.and_(alice.locator('[data-state="stored"]'))).to_have_count(1)
    alice_id = mine.get_attribute("data-id")
    client_id = mine.get_attribute("data-client-id")
    assert client_id
    mallory = ChatClient(server.url)
    try:
        mallory.login("Mallory")
        ack = mallory.sio.call("new message", ("gotcha", {"clientId": client_id}))
        assert ack["id"] != alice_id
        expect(messages_from(alice, "Mallory")).to_have_count(1)
        expect(messages_from(alice, "Mallory").locator(".messageBody")).to_have_text(
            "gotcha"
        )
        expect(mine).to_have_count(1)
        expect(mine.locator(".messageBody")).to_have_text("hello from Alice")
        assert mine.get_attribute("data-id") == alice_id
    finally:
        mallory.close()


def test_the_new_release_notice_leaves_the_header_visible_and_closes(
    gunicorn, open_page
):
    server = gunicorn({"RELEASE": "one"})
    page = open_page(server.url, "Alice", **PHONE)
    page.evaluate("() => document.querySelector('.releaseNotice').hidden = false")
    notice = page.locator(".releaseNotice")
    expect(notice).to_be_visible()
    header = page.locator(".chatHeader").bounding_box()
    box = notice.bounding_box()
    assert box["y"] >= header["y"] + header["height"], (box, header)
    notice.locator(".dismiss").click()
    expect(notice).to_be_hidden()
    expect(page.locator(".peopleToggle")).to_be_visible()


def test_a_name_that_renders_blank_is_refused_with_the_reason(gunicorn, open_page):
    server = gunicorn()
    page = open_page(server.url)
    page.fill(".usernameInput", "\u2800\u2800")
    page.press(".usernameInput", "Enter")
    expect(page.locator(".loginError")).to_have_text(
        "The name needs at least one visible letter or sign."
    )
    expect(page.locator(".chat.page")).to_be_hidden()


def test_a_message_a_moderator_deletes_says_so_on_every_page(gunicorn, open_page):
    """An operator deletes Bob's message: Alice's page and Bob's own show
    "message removed by a moderator" in its place; a muted Bob's next
    message shows why it was not sent."""
    import requests

    server = gunicorn({"OPERATOR_TOKENS": "page-test-token"})
    alice = open_page(server.url, "Alice")
    bob = open_page(server.url, "Bob")
    send(bob, "something awful")
    line = messages_from(alice, "Bob")
    expect(line).to_have_count(1)
    expect(own(bob).and_(bob.locator('[data-state="stored"]'))).to_have_count(1)
    entry_id = line.get_attribute("data-id")
    auth = {"Authorization": "Bearer page-test-token"}
    base = f"{server.url}/api/moderation"
    deleted = requests.delete(
        f"{base}/rooms/lobby/messages/{entry_id}",
        json={"reason": "abuse"},
        headers=auth,
        timeout=5,
    )
    assert deleted.json() == {"deleted": True}
    for page in (alice, bob):
        body = page.locator(f'.message[data-id="{entry_id}"] .messageBody')
        expect(body).to_have_text("message removed by a moderator")
    mute = {"room": "lobby", "name": "Bob", "reason": "cool down"}
    assert requests.post(f"{base}/mutes", json=mute, headers=auth, timeout=5).ok
    send(bob, "but why")
    expect(bob.locator(".message.own .status", has_text="muted")).to_have_count(1)
    shot(alice, "moderation-deleted")


def test_a_moderator_removes_a_message_and_kicks_from_the_page(gunicorn, open_page):
    """Mo, made a moderator by an operator, deletes Bob's message and kicks
    him, from the page, by keyboard, with a confirmation; Bob's page says
    why; the page still passes axe with the controls shown."""
    import requests

    server = gunicorn({"OPERATOR_TOKENS": "page-test-token"})
    mo = open_page(server.url, "Mo")
    made = requests.post(
        f"{server.url}/api/moderation/moderators",
        json={"room": "lobby", "name": "Mo"},
        headers={"Authorization": "Bearer page-test-token"},
        timeout=5,
    )
    assert made.status_code == 201
    mo.reload()  # logs in again with its token: now with the controls
    expect(mo.locator(".chat.page.moderator")).to_be_visible()
    bob = open_page(server.url, "Bob")
    send(bob, "something awful")
    line = messages_from(mo, "Bob")
    expect(line).to_have_count(1)
    line.get_by_role("button", name="Delete this message of Bob").focus()
    mo.keyboard.press("Enter")
    expect(mo.locator(".moderation")).to_be_visible()
    mo.locator(".moderationReason").fill("abuse")
    shot(mo, "moderation-confirm")
    mo.keyboard.press("Enter")
    for page in (mo, bob):
        expect(messages_from(page, "Bob").locator(".messageBody")).to_have_text(
            "message removed by a moderator"
        )
    assert run_axe(mo) == []
    mo.get_by_role("button", name="Kick Bob out of the room").click()
    mo.locator(".moderationReason").fill("rude")
    mo.get_by_role("button", name="Confirm").click()
    expect(bob.locator(".loginError")).to_contain_text("removed from the room")
    expect(bob.locator(".loginError")).to_contain_text("rude")
    expect(logs(mo).filter(has_text="Bob was removed by a moderator")).to_have_count(1)
    shot(mo, "moderation-controls")


def test_the_admin_ui_shows_every_instance_of_a_cluster(
    redis_server, gunicorn, open_page, clients, browser
):
    """The socket.io Admin UI, served from the pinned npm package, logs in
    with an operator token and shows both instances, their sockets counted
    on the dashboard, and this instance's sockets listed."""
    import contextlib
    import re

    env = {
        "REDIS_URL": redis_server.url,
        "ADMIN_UI": "development",
        "OPERATOR_TOKENS": "admin-ui-token",
    }
    a, b = gunicorn(env), gunicorn(env)
    ann = clients(a.url, auth={"username": "Ann"})
    ann.wait_for("login")
    bo = clients(b.url, auth={"username": "Bo"})
    bo.wait_for("login")
    # Without an operator token the admin namespace refuses the connection.
    import socketio

    from tests.support import wait_until

    intruder, heard = socketio.Client(), []
    intruder.on("*", lambda event, *_: heard.append(event), namespace="/admin")
    with contextlib.suppress(socketio.exceptions.ConnectionError):
        intruder.connect(
            a.url,
            namespaces=["/admin"],
            auth={"username": "x", "password": "wrong"},
            transports=["websocket"],
            wait_timeout=5,
        )
    wait_until(
        lambda: "/admin" not in intruder.namespaces, 10, "the admin namespace refused"
    )
    intruder.disconnect()
    assert "config" not in heard and "all_sockets" not in heard
    page = browser.new_page()
    try:
        page.goto(f"{a.url}/admin/")
        page.get_by_label("Server URL").fill(a.url)
        page.get_by_label("Username").fill("ops")
        page.get_by_label("Password").fill("admin-ui-token")
        page.get_by_role("button", name="Connect").click()
        expect(page.locator("header")).to_contain_text("Status: connected")
        namespaces = page.locator(".v-card", has_text="Namespaces")
        main_namespace = namespaces.locator("tr").filter(
            has=page.locator("td", has_text=re.compile(r"^/$"))
        )
        # Both instances' users, counted from each server's stats.
        expect(main_namespace).to_contain_text("2")
        page.get_by_text("Servers", exact=True).first.click()
        expect(page.locator("main tbody tr")).to_have_count(2)
        page.get_by_text("Sockets", exact=True).first.click()
        page.get_by_label("Select namespace").click(force=True)
        page.get_by_role("option", name="/", exact=True).click()
        expect(page.get_by_text(ann.sio.get_sid())).to_be_visible()
        shot(page, "admin-ui")
    finally:
        page.close()


def test_a_banned_name_and_a_slow_room_are_explained_on_the_page(gunicorn, open_page):
    import requests

    server = gunicorn({"OPERATOR_TOKENS": "page-test-token"})
    auth = {"Authorization": "Bearer page-test-token"}
    base = f"{server.url}/api/moderation"
    ban = {"name": "Mallory", "reason": "spam", "seconds": 3600}
    assert requests.post(f"{base}/bans", json=ban, headers=auth, timeout=5).ok
    slow = requests.put(
        f"{base}/rooms/lobby/slow", json={"seconds": 30}, headers=auth, timeout=5
    )
    assert slow.ok
    mallory = open_page(server.url)
    mallory.fill(".usernameInput", "Mallory")
    mallory.press(".usernameInput", "Enter")
    expect(mallory.locator(".loginError")).to_contain_text("You are banned until")
    expect(mallory.locator(".loginError")).to_contain_text("spam")
    ann = open_page(server.url, "Ann")
    expect(ann.locator(".slowMode")).to_have_text("Slow mode: one message every 30 s")
    send(ann, "first")
    expect(own(ann).and_(ann.locator('[data-state="stored"]'))).to_have_count(1)
    send(ann, "second")
    expect(ann.locator(".message.own .status", has_text="slow mode")).to_have_count(1)
