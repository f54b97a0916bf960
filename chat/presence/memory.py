"""Who is online on a single instance: names are unique (case-insensitive)
in a room. ``chat.presence.redis_store`` keeps the same answers for a whole
cluster; both keep ``local``, the members connected to this process, which
is what an instance can always vouch for.
"""

from __future__ import annotations

from chat.presence.local import LocalMembers
from chat.presence.member import JoinResult, Member
from chat.validation import name_key


class MemoryPresence:
    """Presence for a single instance, in this process."""

    degraded_reason: str | None = None
    # Moderation is in this process too: a login checks it on its own.
    checks_in_join = False

    def __init__(self) -> None:
        self.local = LocalMembers()
        self._rooms: dict[str, dict[str, Member]] = {}

    def join(self, member: Member, list_up_to: int = 0, checks=()) -> JoinResult:
        """Add ``member`` unless another person holds the name in the room;
        with the room's names when it has at most ``list_up_to`` users."""
        room = self._rooms.setdefault(member.room, {})
        holder = room.get(member.key)
        if holder is not None and holder.token != member.token:
            return JoinResult(ok=False, count=len(room))
        room[member.key] = member
        self.local[member.sid] = member
        if holder is not None:
            self.local.pop(holder.sid, None)
        names = self.names(member.room) if len(room) <= list_up_to else None
        return JoinResult(True, len(room), holder.sid if holder else None, None, names)

    def leave(self, sid: str) -> tuple[Member | None, int, int | None]:
        """Remove the session: (member if it still held the name, count, seq)."""
        member = self.local.pop(sid, None)
        if member is None:
            return None, 0, None
        room = self._rooms.get(member.room, {})
        if room.get(member.key) is member:
            del room[member.key]
            count = len(room)
            if not room:
                self._rooms.pop(member.room, None)
            return member, count, None
        return None, len(room), None

    def token_of(self, room: str, name: str) -> str | None:
        """The token of whoever holds ``name`` in ``room`` now, if anyone."""
        holder = self._rooms.get(room, {}).get(name_key(name))
        return holder.token if holder else None

    def names(self, room: str) -> list[str]:
        """Names online in ``room``, sorted case-insensitively."""
        return sorted(
            (m.name for m in self._rooms.get(room, {}).values()), key=str.casefold
        )

    def start(self, on_left, spawn, sleep) -> None:
        """Nothing to watch on one instance."""

    def hand_over(self, grace_s: float) -> list[tuple[Member, int, int | None]]:
        """No other instance can take the users over: nothing to keep."""
        return []

    def stop(self) -> list[tuple[Member, int, int | None]]:
        """Forget every local member; returns them with the room's remaining count."""
        return [pair for sid in list(self.local) if (pair := self.leave(sid))[0]]
