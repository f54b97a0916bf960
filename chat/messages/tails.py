"""The newest messages (tails) of the rooms this instance hears, so a login in a busy
room needs no Redis read.

A login sends the room's newest messages (or those missed since its
``lastId``): in a reconnect storm that read was the largest Redis cost of a
login. Every message of a room this instance hosts reaches it through the
room's channel anyway, so it keeps the newest ``keep`` of each.

Served only when provably the same as a read of the stream at that moment,
up to the messages still in flight to this instance (which reach the new
user live, right after its history, as they would after a Redis read):

- the store script returns, with each new id, the id of the entry before it
  in the stream (``prev``); a room's tail is extended only by a message
  whose ``prev`` is the newest entry it holds. Anything else (a publish lost
  with a dead instance, messages arriving out of order, a Redis restart, a
  release without ``prev``) drops the room's tail, and the next login reads
  the stream and starts it again;
- a tail starts from a stream read that nothing was delivered during;
- only rooms whose channel is subscribed have one: a room's tail goes when
  it is unsubscribed, and every tail goes when the subscription is lost.
"""

from __future__ import annotations

import collections

from chat.messages.entries import parse_id


class _Tail:
    """A room's newest entries, contiguous in the stream."""

    __slots__ = ("entries", "ids", "before")

    def __init__(self, entries: list[dict], before: str | None) -> None:
        self.entries = collections.deque(entries)
        self.ids = {e["id"] for e in entries}
        # The id of the entry before the oldest held: "" if the stream has
        # nothing before it, None if unknown.
        self.before = before

    @property
    def newest(self) -> str | None:
        return self.entries[-1]["id"] if self.entries else self.before


class RoomTails:
    """Per room, the newest ``keep`` messages, while they are known exactly."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._rooms: dict[str, _Tail] = {}

    # -- what comes in ---------------------------------------------------------
    def start(self, room: str, entries: list[dict], whole: bool) -> None:
        """A stream read of ``room``'s newest entries, oldest first; ``whole``
        when it returned the whole stream (fewer than asked for)."""
        if self.keep <= 0:
            return
        entries = entries[-self.keep :]
        self._rooms[room] = _Tail(entries, "" if whole else None)

    def add(self, room: str, entry: dict, prev: str | None) -> None:
        """A message delivered in ``room``: extends its tail, or ends it."""
        tail = self._rooms.get(room)
        if tail is None or entry["id"] in tail.ids:
            return
        if prev is None or prev != tail.newest or tail.newest is None:
            del self._rooms[room]
            return
        tail.entries.append(entry)
        tail.ids.add(entry["id"])
        while len(tail.entries) > self.keep:
            gone = tail.entries.popleft()
            tail.ids.discard(gone["id"])
            tail.before = gone["id"]

    def forget(self, room: str) -> None:
        self._rooms.pop(room, None)

    def clear(self) -> None:
        self._rooms.clear()

    def rooms(self) -> int:
        """Rooms with a kept tail (the ``chat_rooms_kept`` metric)."""
        return len(self._rooms)

    # -- what goes out ---------------------------------------------------------
    def newest(self, room: str, count: int) -> list[dict] | None:
        """The newest ``count`` messages, oldest first; None if not known."""
        tail = self._rooms.get(room)
        if tail is None or count > self.keep:
            return None
        if len(tail.entries) < count and tail.before != "":
            return None
        return list(tail.entries)[-count:] if count > 0 else []

    def after(self, room: str, last_id: str, limit: int) -> list[dict] | None:
        """The messages after ``last_id``, if that id is one this tail holds
        or the one just before it, and at most ``limit`` follow it."""
        tail = self._rooms.get(room)
        if tail is None:
            return None
        if last_id in tail.ids:
            after = parse_id(last_id)
            found = [e for e in tail.entries if parse_id(e["id"]) > after]
        elif last_id == tail.before and last_id:
            found = list(tail.entries)
        else:
            return None
        return found if len(found) <= limit else None
