"""Moderation through the operator API: bans by name and by address, mutes,
deleted messages, the audit trail; one instance in memory, and a cluster
through Redis (kept across a restart of every instance)."""

from __future__ import annotations

import pytest
import requests

from deploy.procs import wait_until
from tests.conftest import events_named

TOKEN = "op-token-1234567890"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def api(client, method, path, body=None, headers=AUTH):
    return client.open(
        f"/api/moderation{path}", method=method, json=body, headers=headers
    )


@pytest.mark.settings(OPERATOR_TOKENS=["revoked-token-000", TOKEN])
def test_a_missing_or_wrong_token_gets_401_and_nothing_else(client):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        answer = api(client, "GET", "/bans", headers=headers)
        assert answer.status_code == 401
        assert TOKEN not in answer.get_data(as_text=True)
        assert answer.get_json()["error"] == "unauthorized"
    assert api(client, "GET", "/bans").status_code == 200


def test_without_operator_tokens_there_is_no_api(client):
    assert api(client, "GET", "/bans").status_code == 404


@pytest.mark.settings(OPERATOR_TOKENS=[TOKEN])
def test_a_banned_name_is_refused_at_login_with_the_reason_until_unbanned(
    client, connect
):
    banned = api(client, "POST", "/bans", {"name": "Mallory", "reason": "spam"})
    assert banned.status_code == 201
    sock = connect()
    sock.emit("add user", "mallory")  # names compare as logins compare them
    [error] = events_named(sock, "login error")
    assert error["reason"] == "banned" and "spam" in error["message"]
    assert api(client, "DELETE", "/bans", {"name": "Mallory"}).get_json() == {
        "unbanned": True
    }
    sock.emit("add user", "mallory")
    assert events_named(sock, "login")


@pytest.mark.settings(OPERATOR_TOKENS=[TOKEN])
def test_a_banned_address_is_refused_whatever_the_name(client, connect):
    body = {"address": "127.0.0.1", "reason": "flooding", "seconds": 60}
    assert api(client, "POST", "/bans", body).status_code == 201
    sock = connect()
    sock.emit("add user", "Anyone")
    [error] = events_named(sock, "login error")
    assert error["reason"] == "banned" and "until" in error["message"]
    [listed] = api(client, "GET", "/bans").get_json()["bans"]
    assert listed["kind"] == "address" and listed["reason"] == "flooding"


@pytest.mark.settings(OPERATOR_TOKENS=[TOKEN])
def test_a_muted_user_reads_but_their_messages_are_refused(client, login):
    ann, bo = login("Ann"), login("Bo")
    body = {"room": "lobby", "name": "Bo", "reason": "cool down", "seconds": 60}
    assert api(client, "POST", "/mutes", body).status_code == 201
    ack = bo.emit("new message", "hello?", callback=True)
    assert ack["error"] == "muted" and "cool down" in ack["message"]
    assert ann.emit("new message", "still here", callback=True)["id"]
    assert events_named(bo, "new message")[-1]["message"] == "still here"
    assert not [m for m in events_named(ann, "new message") if m["username"] == "Bo"]


@pytest.mark.settings(OPERATOR_TOKENS=[TOKEN])
def test_a_deleted_message_leaves_every_page_and_history(client, login, connect):
    ann, bo = login("Ann"), login("Bo")
    ack = ann.emit("new message", "something awful", callback=True)
    path = f"/rooms/lobby/messages/{ack['id']}"
    deleted = api(client, "DELETE", path, {"reason": "abuse"})
    assert deleted.get_json() == {"deleted": True}
    assert events_named(bo, "message deleted") == [{"id": ack["id"]}]
    cara = connect()
    cara.emit("add user", "Cara")
    [history] = events_named(cara, "history")
    assert "something awful" not in [m["message"] for m in history["messages"]]
    actions = [e["action"] for e in api(client, "GET", "/audit").get_json()["audit"]]
    assert actions == ["delete"]


@pytest.mark.settings(OPERATOR_TOKENS=[TOKEN])
def test_bad_input_is_refused_with_a_reason(client):
    assert api(client, "POST", "/bans", {"name": "X"}).get_json()["error"] == (
        "invalid_reason"
    )
    body = {"address": "not-an-address", "reason": "r"}
    assert api(client, "POST", "/bans", body).get_json()["error"] == "invalid_target"
    path = "/rooms/lobby/messages/999999999999999999999999-0"
    assert api(client, "DELETE", path, {"reason": "r"}).get_json()["error"] == (
        "invalid_id"
    )


@pytest.mark.settings(OPERATOR_TOKENS=[TOKEN])
def test_a_flood_of_actions_is_rate_limited(client):
    answers = [api(client, "GET", "/audit").status_code for _ in range(60)]
    assert 429 in answers and answers[0] == 200


@pytest.mark.e2e
def test_across_a_cluster_actions_reach_every_instance_and_survive_restarts(
    redis_server, gunicorn, clients
):
    env = {
        "REDIS_URL": redis_server.url,
        "OPERATOR_TOKENS": TOKEN,
        "PRESENCE_HEARTBEAT_S": "1",
        "PRESENCE_TTL_S": "3",
    }
    a, b = gunicorn(env), gunicorn(env)
    ann = clients(a.url, auth={"username": "Ann"})
    ann.wait_for("login")
    bo = clients(b.url, auth={"username": "Bo"})
    bo.wait_for("login")
    ack = ann.sio.call("new message", "awful", timeout=5)
    bo.wait_for("new message", match=lambda m: m["message"] == "awful")

    def call(instance, method, path, body):
        return requests.request(
            method,
            f"{instance.url}/api/moderation{path}",
            json=body,
            headers=AUTH,
            timeout=5,
        )

    path = f"/rooms/lobby/messages/{ack['id']}"
    assert call(a, "DELETE", path, {"reason": "abuse"}).json() == {"deleted": True}
    assert bo.wait_for("message deleted")["id"] == ack["id"]
    mute = {"room": "lobby", "name": "Bo", "reason": "calm", "seconds": 60}
    assert call(a, "POST", "/mutes", mute).status_code == 201
    refused = bo.sio.call("new message", "on b", timeout=5)
    assert refused["error"] == "muted"
    ban = {"name": "Mallory", "reason": "spam"}
    assert call(b, "POST", "/bans", ban).status_code == 201

    a.stop()
    b.stop()
    c = gunicorn(env)
    mallory = clients(c.url, auth={"username": "Mallory"})
    assert mallory.wait_for("login error")["reason"] == "banned"
    audit = call(c, "GET", "/audit", None).json()["audit"]
    assert [e["action"] for e in audit] == ["delete", "mute", "ban"]
    assert all(e["by"] == "operator-1" for e in audit)
    fresh = clients(c.url, auth={"username": "Dee"})
    wait_until(lambda: fresh.named("history"), 10, "history")
    assert "awful" not in [m["message"] for m in fresh.named("history")[0]["messages"]]


def moderate(sock, **request):
    return sock.emit("moderate", request, callback=True)


def proven_login(connect, name, room=None):
    """A login with a token of its own, as the page does."""
    sock = connect()
    options = {"token": f"{name}-token-0123456789"}
    if room:
        options["room"] = room
    sock.emit("add user", name, options)
    [login] = events_named(sock, "login")
    return sock, login


@pytest.mark.settings(OPERATOR_TOKENS=[TOKEN])
def test_a_moderator_acts_in_their_room_and_nobody_else_can(client, connect):
    body = {"room": "lobby", "name": "Mo"}
    # Only someone logged in can be made a moderator: bound to their token.
    assert api(client, "POST", "/moderators", body).status_code == 409
    first, login = proven_login(connect, "Mo")
    assert login["moderator"] is False
    assert api(client, "POST", "/moderators", body).status_code == 201
    # Their next login (the same token: a reload) says so.
    mo, login = proven_login(connect, "Mo")
    assert login["moderator"] is True
    ann, ann_login = proven_login(connect, "Ann")
    assert ann_login["moderator"] is False
    # Not a moderator: refused, and nothing changes.
    refused = moderate(ann, action="mute", name="Mo", reason="no")
    assert refused["error"] == "not_moderator"
    # The moderator mutes Ann in the room; Ann's messages are refused.
    assert moderate(mo, action="mute", name="Ann", reason="calm", seconds=60)["ok"]
    assert ann.emit("new message", "hey", callback=True)["error"] == "muted"
    # A moderator is not moderated.
    assert moderate(mo, action="mute", name="Mo")["error"] == "is_moderator"
    # Someone logging in as Mo without Mo's token cannot: the name is held;
    # and once it is free, taking it does not make them a moderator.
    impostor = connect()
    impostor.emit("add user", "Mo")
    assert events_named(impostor, "login error")[0]["reason"] == "name_taken"
    mo.disconnect()
    impostor.emit("add user", "Mo", {"token": "impostor-token-000000"})
    assert events_named(impostor, "login")[-1]["moderator"] is False
    assert moderate(impostor, action="mute", name="Ann")["error"] == "not_moderator"


@pytest.mark.settings(OPERATOR_TOKENS=[TOKEN])
def test_a_kicked_user_is_told_why_and_cannot_come_back_at_once(client, connect):
    mo, _ = proven_login(connect, "Mo")
    api(client, "POST", "/moderators", {"room": "lobby", "name": "Mo"})
    bo, _ = proven_login(connect, "Bo")
    assert moderate(mo, action="kick", name="Bo", reason="rude")["ok"]
    kicked = events_named(bo, "kicked")
    assert kicked == [{"username": "Bo", "reason": "rude"}]
    assert events_named(mo, "kicked") == kicked
    again = connect()
    again.emit("add user", "Bo")
    [error] = events_named(again, "login error")
    assert error["reason"] == "banned" and "rude" in error["message"]
    # Another room is not affected.
    again.emit("add user", "Bo", {"room": "elsewhere"})
    assert events_named(again, "login")


@pytest.mark.settings(OPERATOR_TOKENS=[TOKEN])
def test_slow_mode_lets_one_message_through_per_interval(client, connect):
    answer = api(client, "PUT", "/rooms/lobby/slow", {"seconds": 30})
    assert answer.get_json() == {"slow": {"room": "lobby", "seconds": 30}}
    ann, login = proven_login(connect, "Ann")
    assert login["slowMode"] == 30
    assert ann.emit("new message", "one", callback=True)["id"]
    second = ann.emit("new message", "two", callback=True)
    assert second["error"] == "slow_mode" and "30 s" in second["message"]
    # A resend of the first (same clientId) is not a new message.
    first = ann.emit("new message", "three", {"clientId": "c-9"}, callback=True)
    assert first["error"] == "slow_mode"
    api(client, "PUT", "/rooms/lobby/slow", {"seconds": 0})
    assert ann.emit("new message", "four", callback=True)["id"]


@pytest.mark.e2e
def test_a_moderator_on_one_instance_kicks_a_user_on_another(
    redis_server, gunicorn, clients
):
    env = {"REDIS_URL": redis_server.url, "OPERATOR_TOKENS": TOKEN}
    a, b = gunicorn(env), gunicorn(env)
    mo = clients(a.url, auth={"username": "Mo", "token": "mo-token-0123456789"})
    mo.wait_for("login")
    made = requests.post(
        f"{b.url}/api/moderation/moderators",
        json={"room": "lobby", "name": "Mo"},
        headers=AUTH,
        timeout=5,
    )
    assert made.status_code == 201
    bo = clients(b.url, auth={"username": "Bo", "token": "bo-token-0123456789"})
    bo.wait_for("login")
    done = mo.sio.call(
        "moderate", {"action": "kick", "name": "Bo", "reason": "rude"}, timeout=5
    )
    assert done == {"ok": True}
    assert bo.wait_for("kicked") == {"username": "Bo", "reason": "rude"}
    bo.wait_for("disconnect")
    left = mo.wait_for("user left")
    assert left["username"] == "Bo"
    back = clients(b.url, auth={"username": "Bo"})
    assert back.wait_for("login error")["reason"] == "banned"


def flask_cli(env, *args):
    import os
    import subprocess

    from deploy.procs import ROOT

    return subprocess.run(
        [str(ROOT / ".venv/bin/flask"), "--app", "wsgi", "moderation", *args],
        cwd=ROOT,
        env={**os.environ, "SECRET_KEY": "cli", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.e2e
def test_shell_commands_act_on_the_running_cluster_and_bans_outlive_redis(
    tmp_path, gunicorn, clients
):
    from deploy.procs import RedisServer

    redis_server = RedisServer(tmp_path, persistent=True).start()
    try:
        env = {"REDIS_URL": redis_server.url}
        instance = gunicorn(env)
        ann = clients(instance.url, auth={"username": "Ann"})
        ann.wait_for("login")
        ack = ann.sio.call("new message", "oops", timeout=5)
        deleted = flask_cli(env, "delete", "lobby", ack["id"], "--reason", "typo")
        assert deleted.returncode == 0, deleted.stderr
        assert '"deleted": true' in deleted.stdout
        assert ann.wait_for("message deleted")["id"] == ack["id"]
        banned = flask_cli(env, "ban", "Mallory", "--reason", "spam")
        assert banned.returncode == 0, banned.stderr
        # No shell command joins the cluster as an instance.
        assert "instance" not in banned.stderr or "started" not in banned.stderr
        redis_server.stop()
        redis_server.start()
        mallory = clients(instance.url, auth={"username": "Mallory"})
        error = mallory.wait_for("login error", timeout=20)
        assert error["reason"] == "banned" and "spam" in error["message"]
        listed = flask_cli(env, "bans")
        assert '"value": "Mallory"' in listed.stdout
        audit = flask_cli(env, "audit")
        assert '"action": "delete"' in audit.stdout and "cli:" in audit.stdout
    finally:
        redis_server.stop()


def test_a_flood_of_moderate_events_is_rate_limited_and_changes_nothing(connect):
    eve, _ = proven_login(connect, "Eve")
    answers = [moderate(eve, action="delete", id="1-0")["error"] for _ in range(40)]
    assert set(answers) == {"not_moderator", "rate_limited"}
    assert answers.count("rate_limited") >= 10


@pytest.mark.e2e
def test_on_one_redis_a_login_reads_its_bans_role_and_slow_mode_in_its_one_step(
    redis_server, gunicorn, clients
):
    """On one Redis the name's claim reads the login's checks itself: a ban
    refuses before the name is taken, and the moderator's role and the
    room's slow mode come back with the login."""
    env = {"REDIS_URL": redis_server.url, "OPERATOR_TOKENS": TOKEN}
    a = gunicorn(env)

    def call(method, path, body):
        answer = requests.request(
            method, f"{a.url}/api/moderation{path}", json=body, headers=AUTH, timeout=5
        )
        assert answer.ok, answer.text
        return answer.json()

    mo_auth = {"username": "Mo", "token": "mo-token-0123456789"}
    first = clients(a.url, auth=mo_auth)
    assert first.wait_for("login")["moderator"] is False
    call("POST", "/moderators", {"room": "lobby", "name": "Mo"})
    call("PUT", "/rooms/lobby/slow", {"seconds": 5})
    call("POST", "/bans", {"name": "Eve", "reason": "spam"})
    # Mo again (another tab, the same token): now a moderator, in slow mode.
    mo = clients(a.url, auth=mo_auth)
    login = mo.wait_for("login")
    assert (login["moderator"], login["slowMode"]) == (True, 5)
    eve = clients(a.url, auth={"username": "Eve", "token": "eve-token-0123456789"})
    assert eve.wait_for("login error")["reason"] == "banned"
    call("DELETE", "/bans", {"name": "Eve"})
    # The refused login took nobody's name: Eve, unbanned, logs in.
    back = clients(a.url, auth={"username": "Eve", "token": "eve-token-0123456789"})
    assert back.wait_for("login")["numUsers"] == 2
    mo.wait_for("user joined", lambda j: j["username"] == "Eve")
    assert [j["username"] for j in mo.named("user joined")] == ["Eve"]
