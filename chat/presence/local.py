"""The members connected to this process, found by session or by room.

Presence keeps ``local`` (session id -> ``Member``) in every mode; what an
instance can always vouch for. While Redis is away a login counts and lists
the room's local users, and an operator's kick finds the name's sessions in
a room: by a look at every local user, each login of a storm during an
outage cost a pass over the whole instance. ``LocalMembers`` keeps each
room's members as well, so those answers cost the room's size.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from chat.presence.member import Member

_NONE: Mapping[str, Member] = MappingProxyType({})


class LocalMembers(dict):
    """``dict`` of session id -> ``Member``, with each room's members kept.

    Only ``[]=``, ``del``, ``pop`` and ``clear`` change it (the others raise),
    so the rooms never disagree with the sessions.
    """

    __slots__ = ("_rooms",)

    def __init__(self) -> None:
        super().__init__()
        self._rooms: dict[str, dict[str, Member]] = {}

    def in_room(self, room: str) -> Mapping[str, Member]:
        """Session id -> member of ``room``'s local members, read-only: a
        change through it would leave the rooms disagreeing with the sessions."""
        members = self._rooms.get(room)
        return _NONE if members is None else MappingProxyType(members)

    def rooms(self) -> list[str]:
        """The rooms with a local member."""
        return list(self._rooms)

    def __setitem__(self, sid: str, member: Member) -> None:
        old = self.get(sid)
        if old is not None:
            self._forget(sid, old)
        super().__setitem__(sid, member)
        self._rooms.setdefault(member.room, {})[sid] = member

    def __delitem__(self, sid: str) -> None:
        member = super().pop(sid)
        self._forget(sid, member)

    def pop(self, sid: str, *default):
        if sid not in self:
            if default:
                return default[0]
            raise KeyError(sid)
        member = super().pop(sid)
        self._forget(sid, member)
        return member

    def clear(self) -> None:
        super().clear()
        self._rooms.clear()

    def _forget(self, sid: str, member: Member) -> None:
        members = self._rooms.get(member.room)
        if members is not None:
            members.pop(sid, None)
            if not members:
                del self._rooms[member.room]

    def _unsupported(self, *args, **kwargs):
        raise TypeError("LocalMembers changes through [], del, pop and clear only")

    update = setdefault = popitem = __ior__ = _unsupported
