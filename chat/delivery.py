"""What this instance has delivered to its users, per room.

Two promises rest on it:
- a message id is delivered at most once per instance, whether it comes
  from a local sender, from pub/sub, or from a replay of the stream after a
  lost subscription;
- the last presence event a user receives carries the current count, even
  when ``user joined`` / ``user left`` of different instances arrive out of
  order: each carries the room's sequence number from Redis, and an older
  one is delivered with the count of the newest seen.
"""

from __future__ import annotations

import collections


class Delivery:
    """Recent message ids and the newest presence count of each room."""

    def __init__(self, keep_ids: int = 2000) -> None:
        self._keep = keep_ids
        self._ids: dict[str, collections.OrderedDict] = {}
        self._presence: dict[str, tuple[int, int]] = {}

    def first_time(self, room: str, msg_id: str) -> bool:
        """Record ``msg_id`` as delivered in ``room``; False if it already was."""
        seen = self._ids.setdefault(room, collections.OrderedDict())
        if msg_id in seen:
            return False
        seen[msg_id] = None
        if len(seen) > self._keep:
            seen.popitem(last=False)
        return True

    def note_count(self, room: str, seq: int, count: int) -> None:
        """Remember a count the room was told (``login`` carries one too)."""
        if seq >= self._presence.get(room, (-1, 0))[0]:
            self._presence[room] = (seq, count)

    def presence_view(self, room: str, payload: dict) -> dict:
        """``payload`` with the newest count known for ``room``."""
        seq = payload.get("seq")
        if not isinstance(seq, int):
            return payload
        self.note_count(room, seq, payload.get("numUsers", 0))
        newest_seq, count = self._presence[room]
        if newest_seq == seq:
            return payload
        return {**payload, "numUsers": count}
