"""History of one instance (no Redis): ``retain`` messages per room."""

from __future__ import annotations

import collections
import time

from chat.messages.entries import client_id_key, make_entry, parse_id
from chat.presence.rooms import LastUse

# Client ids remembered by the in-memory history (per room and sender).
CLIENT_IDS_KEPT = 10000


class MemoryHistory:
    """History of one instance, ``retain`` messages per room at most."""

    def __init__(
        self, retain: int, ttl_s: int = 7 * 24 * 3600, check_send=None
    ) -> None:
        # (room, sender) -> raises Muted or SlowMode (chat.moderation).
        self._check_send = check_send
        self._retain = retain
        self._rooms: dict[str, collections.deque] = {}
        self._written = LastUse(ttl_s)
        self._trimmed: dict[str, tuple[int, int]] = {}
        self._last = (0, 0)
        self._client_ids: collections.OrderedDict = collections.OrderedDict()

    def _next_id(self) -> str:
        now = int(time.time() * 1000)
        ms, seq = self._last
        self._last = (now, 0) if now > ms else (ms, seq + 1)
        return f"{self._last[0]}-{self._last[1]}"

    def store(
        self, room: str, username: str, message: str, client_id: str | None = None
    ) -> tuple[dict, bool]:
        """Store a message once per ``client_id``: (entry, True if new)."""
        key = client_id_key(room, username, client_id) if client_id else None
        if self._check_send is not None and key not in self._client_ids:
            self._check_send(room, username)
        if key in self._client_ids:
            first = self._client_ids[key]
            return make_entry(first, username, message, client_id), False
        entry = self.append(room, username, message, client_id)
        if client_id:
            self._client_ids[key] = entry["id"]
            if len(self._client_ids) > CLIENT_IDS_KEPT:
                self._client_ids.popitem(last=False)
        return entry, True

    def append(
        self, room: str, username: str, message: str, client_id: str | None = None
    ) -> dict:
        """Store a message and return it with its id and server timestamp."""
        for gone in self._written.expire():
            self._rooms.pop(gone, None)
            self._trimmed.pop(gone, None)
        self._written.touch(room)
        entries = self._rooms.setdefault(room, collections.deque())
        entry = make_entry(self._next_id(), username, message, client_id)
        entries.append(entry)
        while len(entries) > self._retain:
            self._trimmed[room] = parse_id(entries.popleft()["id"])
        return entry

    def delete(self, room: str, entry_id: str) -> bool:
        """Remove one message from the room's history (moderation)."""
        entries = self._rooms.get(room, ())
        for entry in entries:
            if entry["id"] == entry_id:
                entries.remove(entry)
                return True
        return False

    def has_messages(self, room: str) -> bool:
        """Whether ``room`` has history, without copying it."""
        return bool(self._rooms.get(room))

    def newest(self, room: str, count: int) -> list[dict]:
        """The last ``count`` messages, oldest first."""
        entries = self._rooms.get(room, ())
        return list(entries)[-count:] if count > 0 else []

    def since(self, room: str, last_id: str, limit: int) -> tuple[list[dict], bool]:
        """The newest ``limit`` messages after ``last_id``; True if some were lost."""
        after = parse_id(last_id)
        found = [e for e in self._rooms.get(room, ()) if parse_id(e["id"]) > after]
        dropped = self._trimmed.get(room, (-1, -1)) > after or len(found) > limit
        return found[-limit:], dropped
