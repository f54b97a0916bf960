"""python-socketio's room bookkeeping, with each session's rooms kept with it.

python-socketio's manager keeps ``rooms[namespace][room]`` (a bidict of the
room's sessions) and nothing from a session to its rooms. To find them,
``basic_disconnect`` and ``get_rooms`` test every room of the namespace,
and every session has a room of its own: each disconnect costs a copy of
that dictionary and a membership test per connected session. On an instance
holding 19,000 users, one leave tested 19,000 rooms, and a wave of leaves
costs the square of the users.

``RoomIndex`` keeps, for each session, the rooms it joined besides its own
and the namespace's (``None``): one room's name (the chat's case), or a set
of names for a session in several. A disconnect then leaves exactly those.
The entry goes when the session leaves its last such room or disconnects.

Written against python-socketio's ``BaseManager`` in the version of
chat.internals.pins; tests/test_internals.py runs both disconnects on the
same rooms and fails when an upgrade makes them differ.
"""

from __future__ import annotations


class RoomIndex:
    """A manager mixin (before ``socketio.Manager``) that finds a session's
    rooms without looking at everyone's."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # sid -> a room's name, or a set of names (see the module docstring).
        self._joined: dict[str, str | set] = {}

    def joined_rooms(self, sid: str) -> tuple:
        """The rooms ``sid`` joined besides its own and the namespace's."""
        joined = self._joined.get(sid)
        if joined is None:
            return ()
        if isinstance(joined, set):
            return tuple(joined)
        return (joined,)

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if room is None or room == sid:
            return
        joined = self._joined.get(sid)
        if joined is None:
            self._joined[sid] = room
        elif isinstance(joined, set):
            joined.add(room)
        elif joined != room:
            self._joined[sid] = {joined, room}

    def basic_leave_room(self, sid, namespace, room):
        super().basic_leave_room(sid, namespace, room)
        if room is None or room == sid:
            return
        joined = self._joined.get(sid)
        if isinstance(joined, set):
            joined.discard(room)
            if len(joined) == 1:
                self._joined[sid] = next(iter(joined))
        elif joined == room:
            del self._joined[sid]

    def get_rooms(self, sid, namespace):
        """The rooms ``sid`` is in, its own included (as python-socketio's)."""
        rooms = self.rooms.get(namespace, {})
        return [
            room
            for room in (sid, *self.joined_rooms(sid))
            if room in rooms and sid in rooms[room]
        ]

    def basic_disconnect(self, sid, namespace, **kwargs):
        """python-socketio's, leaving only the rooms ``sid`` is in."""
        rooms = self.rooms.get(namespace)
        if rooms is None:
            self._joined.pop(sid, None)
            return
        for room in (None, sid, *self.joined_rooms(sid)):
            members = rooms.get(room)
            if members is not None and sid in members:
                self.basic_leave_room(sid, namespace, room)
        self._joined.pop(sid, None)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]
