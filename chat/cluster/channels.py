"""Room-scoped delivery on Redis pub/sub: an instance hears a room only while
it hosts one of the room's members.

python-socketio's Redis manager publishes every emit on one channel, so every
instance would receive and decode every message of every room, hosted here
or not (``make bench-scale``, docs/benchmarks.md). Here the events of a chat
room go to the channel ``<REDIS_CHANNEL>#<room>``; an instance subscribes to it when the
room gets its first local member and unsubscribes once it has none. Every
other message (to one socket, disconnects, anything with a callback) stays
on the main channel, which every instance hears.

A login subscribes to its room *before* it reads the room's history, and
waits for Redis to confirm: a message published while the history is read
then reaches the instance, and the login's "meanwhile" rule delivers it.

This is a mixin for ``chat.cluster.manager.ChatRedisManager``; the manager's listener
calls ``_resubscribe`` after every reconnect and ``_note_subscribed`` for
every subscribe confirmation.
"""

from __future__ import annotations

import logging
import time

import gevent.event

from chat.cluster.keys import Keys
from chat.tasks import every

log = logging.getLogger(__name__)

# The chat's room events (chat.events, chat.messages.fanout): they go to
# their room.
ROOM_EVENTS = frozenset(
    {
        "new message",
        "user joined",
        "user left",
        "typing",
        "stop typing",
        "message deleted",
        "kicked",
        "slow mode",
    }
)


class RoomChannels:
    """Publish room events to their room's channel; hear only hosted rooms."""

    channel: str
    fanout: object  # chat.messages.fanout.Fanout
    rooms: dict
    pubsub: object
    listening: bool
    _timeout_s: float

    def setup_room_channels(self, linger_s: float, keys: Keys) -> None:
        """``linger_s``: how long a room stays subscribed after a login asked
        for it, and how often rooms left without members are unsubscribed
        (a login that failed after subscribing leaves one behind)."""
        self._linger_s = linger_s
        self._keys = keys
        # Room -> confirmed by Redis (an Event while the subscribe is pending).
        self._subscribed: dict[str, gevent.event.Event] = {}
        # Room -> when a login last asked for it: a login between its
        # ensure_room and its join must not see the room unsubscribed.
        self._wanted_at: dict[str, float] = {}
        self._sweeper = None

    def room_channel(self, room: str) -> str:
        return self._keys.room_channel(self.channel, room)

    def channel_for(self, data: dict) -> str:
        """The channel a published message goes to."""
        room = data.get("room")
        if (
            data.get("method") == "emit"
            and data.get("event") in ROOM_EVENTS
            and isinstance(room, str)
            and data.get("callback") is None
        ):
            return self.room_channel(room)
        return self.channel

    def room_of_channel(self, channel: bytes) -> str | None:
        """The room whose channel this is; None for the main channel."""
        return self._keys.room_of_channel(self.channel, channel.decode())

    # -- subscriptions ----------------------------------------------------------
    def ensure_room(self, room: str) -> None:
        """Subscribe to ``room``'s channel and wait until Redis confirms it.

        Waits at most REDIS_TIMEOUT_S; without a working subscription (Redis
        away) it returns at once: the replay after reconnecting covers it.
        """
        self._wanted_at[room] = time.monotonic()
        event = self._subscribe(room)
        waiting = self.listening and not event.is_set()
        if waiting and not event.wait(self._timeout_s):
            log.warning("no subscription confirmed for a room", extra={"room": room})
        self._start_sweeper()

    def hosts(self, room: str) -> bool:
        """Whether this instance keeps anything for ``room``: it is
        subscribed (a login may be reading its history) or has members."""
        return room in self._subscribed or room in self.rooms.get("/", {})

    def subscribed_rooms(self) -> int:
        return len(self._subscribed)

    def hears(self, room: str) -> bool:
        """Whether ``room``'s channel is subscribed and Redis confirmed it."""
        event = self._subscribed.get(room)
        return self.listening and event is not None and event.is_set()

    def _subscribe(self, room: str) -> gevent.event.Event:
        """Ask Redis for ``room``'s channel, once; the Event is set when Redis
        confirms (while not listening, the reconnect subscribes it)."""
        event = self._subscribed.get(room)
        if event is None:
            event = self._subscribed[room] = gevent.event.Event()
            if self.listening:
                try:
                    self.pubsub.subscribe(self.room_channel(room))
                except Exception as exc:  # the listener notices and reconnects
                    log.warning("cannot subscribe to a room channel: %s", exc)
        return event

    def _note_subscribed(self, channel: bytes) -> None:
        room = self.room_of_channel(channel)
        event = self._subscribed.get(room) if room is not None else None
        if event is not None:
            event.set()

    def _resubscribe(self) -> None:
        """After (re)connecting: the main channel and every hosted room."""
        for event in self._subscribed.values():
            event.clear()
        rooms = list(self._subscribed)
        self.pubsub.subscribe(self.channel, *(self.room_channel(r) for r in rooms))

    def _unsubscribe_if_empty(self, room: str) -> None:
        if room in self.rooms.get("/", {}) or room not in self._subscribed:
            return
        if time.monotonic() - self._wanted_at.get(room, 0.0) < self._linger_s:
            return  # a login may be about to join; the sweeper comes back
        del self._subscribed[room]
        self._wanted_at.pop(room, None)
        self.fanout.forget(room)
        if self.listening:
            try:
                self.pubsub.unsubscribe(self.room_channel(room))
            except Exception as exc:
                log.warning("cannot unsubscribe from a room channel: %s", exc)

    def _start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = every(self._linger_s, self._sweep, "room channel sweep")

    def _sweep(self) -> None:
        for room in list(self._subscribed):
            self._unsubscribe_if_empty(room)

    # -- python-socketio's room bookkeeping -------------------------------------
    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if room is not None and room != sid:
            # A join without a login's ensure_room (none in the chat today).
            self._subscribe(room)

    def basic_leave_room(self, sid, namespace, room):
        super().basic_leave_room(sid, namespace, room)
        if room is not None and room != sid:
            self._unsubscribe_if_empty(room)
