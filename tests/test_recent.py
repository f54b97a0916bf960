"""The newest messages an instance keeps per room (chat.messages.tails), and logins
served from them: the same history as a Redis read, or a Redis read."""

from __future__ import annotations

import pytest
import redis
import requests

from chat.messages.tails import RoomTails


def entry(n: int) -> dict:
    return {"id": f"{n}-0", "username": "a", "message": f"m{n}", "ts": n}


def ids(messages) -> list[str]:
    return [m["id"] for m in messages]


def test_a_tail_grows_only_by_the_message_after_its_newest():
    kept = RoomTails(keep=3)
    kept.start("r", [entry(1), entry(2)], whole=False)
    kept.add("r", entry(3), "2-0")
    kept.add("r", entry(3), "2-0")  # the same message again: once
    kept.add("r", entry(4), "3-0")
    assert ids(kept.newest("r", 3)) == ["2-0", "3-0", "4-0"]
    assert ids(kept.after("r", "2-0", 10)) == ["3-0", "4-0"]
    assert ids(kept.after("r", "1-0", 10)) == ["2-0", "3-0", "4-0"]  # just before
    assert kept.after("r", "0-5", 10) is None  # older than it knows
    assert kept.after("r", "3-0", 0) is None  # more than the cap: ask Redis


def test_a_gap_or_a_message_without_prev_ends_the_tail():
    kept = RoomTails(keep=5)
    kept.start("r", [entry(1)], whole=False)
    kept.add("r", entry(3), "2-0")  # 2-0 never came: lost, or still on its way
    assert kept.newest("r", 1) is None
    kept.start("r", [entry(1)], whole=False)
    kept.add("r", entry(2), None)  # a release that does not say
    assert kept.newest("r", 1) is None


def test_a_short_tail_answers_only_when_it_is_the_whole_stream():
    kept = RoomTails(keep=5)
    kept.start("part", [entry(7)], whole=False)
    assert kept.newest("part", 5) is None
    assert ids(kept.newest("part", 1)) == ["7-0"]
    kept.start("new", [], whole=True)
    assert kept.newest("new", 5) == []
    kept.add("new", entry(1), "")  # the stream's first entry
    assert ids(kept.newest("new", 5)) == ["1-0"]
    kept.forget("new")
    assert kept.newest("new", 5) is None


def history_reads(instance, source: str) -> float:
    text = requests.get(f"{instance.url}/metrics", timeout=5).text
    name = f'chat_history_reads_total{{source="{source}"}} '
    lines = [line for line in text.splitlines() if line.startswith(name)]
    return float(lines[0].split()[-1]) if lines else 0.0


@pytest.mark.e2e
def test_logins_get_the_streams_history_kept_or_read_even_after_a_lost_publish(
    cluster, clients, redis_server
):
    a, b = cluster(2, HISTORY_LENGTH="5")
    alice = clients(a.url)
    alice.login("Alice")  # a hears the lobby from here on
    bob = clients(b.url)
    bob.login("Bob")
    store = redis.Redis.from_url(redis_server.url, decode_responses=True)

    def stream_tail() -> list[str]:
        return [i for i, _ in reversed(store.xrevrange("chat:history:lobby", count=5))]

    def newcomer_history(name: str) -> list[str]:
        newcomer = clients(a.url)
        newcomer.login(name)
        history = newcomer.wait_for("history")["messages"]
        newcomer.close()
        return ids(history)

    for i in range(7):
        bob.say(f"before {i}")
    alice.wait_for("new message", lambda d: d["message"] == "before 6")
    assert newcomer_history("Carol") == stream_tail()  # read, and kept from now
    bob.say("kept")
    alice.wait_for("new message", lambda d: d["message"] == "kept")
    kept_before = history_reads(a, "kept")
    assert newcomer_history("Dave") == stream_tail()
    assert history_reads(a, "kept") == kept_before + 1
    # A message stored that no instance published (its instance died
    # between the two): the next one does not follow what a kept, so a
    # forgets the room and reads the stream, which has both.
    ghost = store.xadd("chat:history:lobby", {"u": "Ghost", "m": "never published"})
    bob.say("after the gap")
    alice.wait_for("new message", lambda d: d["message"] == "after the gap")
    history = newcomer_history("Erin")
    assert ghost in history
    assert history == stream_tail()
