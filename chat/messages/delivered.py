"""What this instance has delivered to its users, per room.

A message id is delivered at most once per instance, whether it comes from
a local sender, from pub/sub, or from a replay of the stream after a lost
subscription; and a login's history and the live messages around it fit
together (the windows and logins kept here).
"""

from __future__ import annotations

import collections
import time

from chat.messages.entries import parse_id

# How long a login's catch-up is remembered (longer than any publish delay).
LOGIN_MEMORY_S = 120.0


class Delivered:
    """The latest message ids delivered in each room, and the logins around them."""

    def __init__(self, keep_ids: int = 2000) -> None:
        self._keep = keep_ids
        self._ids: dict[str, collections.OrderedDict] = {}
        # room -> [logins reading history, messages delivered meanwhile]
        self._windows: dict[str, list] = {}
        # room -> recent logins: [monotonic time, wall ms, sid, covered], where
        # covered is (newest id read from the stream, ids added meanwhile)
        self._logins: dict[str, collections.deque] = {}
        # room -> (newest id any recent login read, ids any added meanwhile)
        self._covered: dict[str, tuple] = {}

    def forget(self, room: str) -> None:
        """Drop what is kept for ``room``: it has no local member any more
        and its channel is unsubscribed (a login reading its history keeps
        it subscribed, so no window is open)."""
        self._ids.pop(room, None)
        self._logins.pop(room, None)
        self._covered.pop(room, None)

    def rooms(self) -> int:
        """Rooms something is kept for (the ``chat_rooms_kept`` metric)."""
        return len(self._ids.keys() | self._logins.keys())

    def first_time(self, room: str, entry: dict) -> bool:
        """Record ``entry`` as delivered in ``room``; False if it already was."""
        seen = self._ids.setdefault(room, collections.OrderedDict())
        if entry["id"] in seen:
            return False
        seen[entry["id"]] = None
        if len(seen) > self._keep:
            seen.popitem(last=False)
        window = self._windows.get(room)
        if window is not None:
            window[1].append(entry)
        return True

    def open_window(self, room: str) -> int:
        """Start keeping what ``room`` is delivered (a login reads history)."""
        window = self._windows.setdefault(room, [0, []])
        window[0] += 1
        return len(window[1])

    def window(self, room: str, start: int) -> list[dict]:
        """Messages delivered to ``room`` since ``open_window`` returned ``start``."""
        return list(self._windows[room][1][start:])

    def close_window(self, room: str) -> None:
        window = self._windows[room]
        window[0] -= 1
        if window[0] == 0:
            del self._windows[room]

    def note_login(self, room: str, sid: str) -> None:
        """A login joins ``room`` now; its catch-up is not read yet."""
        now = time.monotonic()
        logins = self._logins.setdefault(room, collections.deque())
        if logins and now - logins[0][0] > LOGIN_MEMORY_S:
            while logins and now - logins[0][0] > LOGIN_MEMORY_S:
                logins.popleft()
            # What the remaining logins cover, for already_sent's fast path.
            covered = [login[3] for login in logins if login[3] is not None]
            self._covered[room] = (
                max((c[0] for c in covered), default=(0, 0)),
                frozenset().union(*(c[1] for c in covered)),
            )
        logins.append([now, time.time() * 1000, sid, None])  # None: reading

    def note_catch_up(
        self, room: str, sid: str, read_up_to: tuple[int, int], extra: frozenset
    ) -> None:
        """The login of ``sid`` has every message up to ``read_up_to``, and ``extra``.

        ``read_up_to`` is the newest id its stream read returned (or its
        lastId): a stream id is given at XADD in increasing order, so no
        message up to it can turn up later. ``extra`` are the ids delivered
        here while it read, which may be newer.
        """
        for login in reversed(self._logins.get(room, ())):
            if login[2] == sid:
                login[3] = (read_up_to, extra)
                break
        newest_read, extras = self._covered.get(room, ((0, 0), frozenset()))
        self._covered[room] = (max(newest_read, read_up_to), extras | extra)

    def already_sent(self, room: str, msg_id: str) -> list[str]:
        """Sessions whose login history covered ``msg_id``: skip them.

        A message can reach this instance after a login read it from the
        stream (a delayed publish, an outbox flush, a replay from the
        streams on a restarted instance).
        """
        logins = self._logins.get(room)
        if not logins:
            return []
        order = parse_id(msg_id)
        newest_read, extras = self._covered.get(room, ((0, 0), frozenset()))
        if order > newest_read and msg_id not in extras:
            return []  # the usual case: newer than every login's history
        return [
            sid
            for _, _, sid, covered in logins
            if covered is not None and (order <= covered[0] or msg_id in covered[1])
        ]

    def logged_in_since(self, room: str, wall_ms: float) -> list[str]:
        """Sessions that joined ``room`` after ``wall_ms`` and have their history.

        One still reading its history gets what is delivered meanwhile in
        it (``window``), so it is not listed.
        """
        return [
            sid
            for _, at, sid, ids in self._logins.get(room, ())
            if at >= wall_ms and ids is not None
        ]
