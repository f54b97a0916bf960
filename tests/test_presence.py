"""Who is online, as one process keeps it (unit tests, no Redis)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from chat.presence.local import LocalMembers
from chat.presence.member import Member


def test_each_rooms_members_agree_with_the_sessions_through_every_change():
    """Logins, logins that take a session over, leaves and kicks in any
    order: a room's local members are always the sessions in that room,
    and a room without any is not kept."""
    rng = random.Random(7)
    local = LocalMembers()
    for step in range(5000):
        sid = f"s{rng.randrange(300)}"
        action = rng.random()
        if action < 0.55:
            local[sid] = Member(sid, f"r{rng.randrange(12)}", f"n{step}", "t")
        elif action < 0.8:
            local.pop(sid, None)
        elif sid in local:
            del local[sid]
        if step % 250 == 0 or step == 4999:
            rooms = {m.room for m in local.values()}
            assert sorted(local.rooms()) == sorted(rooms)
            for room in rooms | {"nowhere"}:
                expected = {s: m for s, m in local.items() if m.room == room}
                assert local.in_room(room) == expected
    local.clear()
    assert local.rooms() == [] and local.in_room("r1") == {}


def test_local_members_change_only_where_the_rooms_follow():
    local = LocalMembers()
    local["a"] = Member("a", "dev", "Ann", "t")
    for change in (
        lambda: local.update(b=Member("b", "dev", "Bo", "t")),
        lambda: local.setdefault("b", Member("b", "dev", "Bo", "t")),
        local.popitem,
    ):
        with pytest.raises(TypeError):
            change()
    assert list(local.in_room("dev")) == ["a"]
    for room in ("dev", "nowhere"):
        with pytest.raises(TypeError):
            local.in_room(room)["b"] = Member("b", room, "Bo", "t")
    assert list(local.in_room("dev")) == ["a"] and local.in_room("nowhere") == {}
    with pytest.raises(KeyError):
        local.pop("nobody")


def test_a_member_encodes_as_its_dataclass_fields():
    """``Member.to_dict`` is ``dataclasses.asdict`` without the deep copy:
    a field added to Member must be added there too."""
    member = Member("s1", "dev", "Zoë", "tok", proven=True)
    assert member.to_dict() == dataclasses.asdict(member)
    assert list(member.to_dict()) == [f.name for f in dataclasses.fields(Member)]
