"""The newest count of each room, so that the last ``user joined`` /
``user left`` a user receives carries the current count even when the
events of different instances arrive out of order: each carries the room's
sequence number from Redis, and an older one is delivered with the count of
the newest seen.
"""

from __future__ import annotations


class PresenceCounts:
    """Per room, the newest (sequence, count) this instance heard."""

    def __init__(self) -> None:
        self._presence: dict[str, tuple[int, int]] = {}

    def forget(self, room: str) -> None:
        """``room`` has no local member any more."""
        self._presence.pop(room, None)

    def rooms(self) -> int:
        """Rooms a count is kept for (the ``chat_rooms_kept`` metric)."""
        return len(self._presence)

    def note_count(self, room: str, seq: int, count: int) -> None:
        """Remember a count the room was told (``login`` carries one too).

        A room told it is empty is forgotten: Redis drops an empty room's
        sequence, and its next join starts again from 1."""
        if seq >= self._presence.get(room, (-1, 0))[0]:
            self._presence[room] = (seq, count)

    def count_now(self, room: str, seq: int, count: int) -> int:
        """``count`` (told at ``seq``), unless a later presence event of
        ``room`` already came in: then that one's count."""
        self.note_count(room, seq, count)
        return self._presence[room][1]

    def presence_view(self, room: str, payload: dict) -> dict:
        """``payload`` with the newest count known for ``room``."""
        seq = payload.get("seq")
        if not isinstance(seq, int):
            return payload
        self.note_count(room, seq, payload.get("numUsers", 0))
        newest_seq, count = self._presence[room]
        if newest_seq == seq:
            if count == 0:
                del self._presence[room]
            return payload
        return {**payload, "numUsers": count}
