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
