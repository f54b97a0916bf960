"""Who receives what: the one place that decides the recipients of a room's
events on this instance.

A ``new message`` reaches this module in one of four ways, and each is
decided here:

- ``send``: from a local sender, once it is stored (or pending in the
  outbox while Redis is away);
- ``heard``: every emit for a room hosted here passes through it before
  python-socketio delivers it, this instance's own and other instances'
  from pub/sub: a message id is delivered once, the sessions whose login
  history already had it are skipped, the room's tail is extended
  (chat.messages.tails) and ``prev`` is taken off; presence events get the
  newest count (chat.presence.counts);
- ``stored``: an outbox message got its id;
- ``replay``: after a lost subscription, or when another instance went
  away, what the streams have that this instance may not have delivered.
"""

from __future__ import annotations

import logging
import time

import gevent

from chat.messages.entries import public
from chat.presence.member import presence_event
from chat.validation import name_key

log = logging.getLogger(__name__)

# A message published this long before the subscription broke may still
# have been in flight; the replay starts that far back and skips what this
# instance already delivered.
REPLAY_SLACK_MS = 5000


def _with(message: dict, sids: list[str]) -> list[str]:
    """``message``'s skip_sid (None, one sid or a list) plus ``sids``."""
    skip = message.get("skip_sid")
    if skip is None:
        return list(sids)
    return [*(skip if isinstance(skip, list) else [skip]), *sids]


class Fanout:
    """The recipients of the room events of one instance.

    ``socketio`` is the app's Flask-SocketIO object; ``state`` the
    instance's stores (chat.state): who is online here, the history and
    outbox, what was delivered, the kept tails and the presence counts.
    """

    def __init__(self, socketio, state) -> None:
        self.socketio = socketio
        self.state = state
        # Since when (ms) a replay for a departed instance is owed, while
        # one that failed waits to be tried again.
        self._owed_since_ms: int | None = None

    # -- a local sender ----------------------------------------------------
    def send(self, room: str, entry: dict, sender_sid: str, pending: bool) -> None:
        """A message of ``sender_sid`` goes to the rest of ``room``.

        A pending one (no id yet) goes to this instance's users only; the
        other instances get it from the outbox, with its id
        (``stored``)."""
        self.socketio.emit(
            "new message",
            public(entry),
            to=room,
            skip_sid=sender_sid,
            ignore_queue=pending,
        )

    def deleted(self, room: str, entry_id: str) -> None:
        """A moderator removed a message: every page in the room drops it."""
        self.socketio.emit("message deleted", {"id": entry_id}, to=room)

    def kick(self, room: str, name: str, reason: str) -> None:
        """``name`` is put out of ``room``: the room is told, and every
        instance closes that user's sessions there (``heard``; on one
        instance, here)."""
        self.socketio.emit("kicked", {"username": name, "reason": reason}, to=room)
        if not self.state.redis:
            gevent.spawn(self._disconnect, room, name)

    def slow_mode(self, room: str, seconds: int) -> None:
        """The room's pages show its slow mode (0: off)."""
        self.socketio.emit("slow mode", {"seconds": seconds}, to=room)

    def _disconnect(self, room: str, name: str) -> None:
        key = name_key(name)
        members = self.state.presence.local.in_room(room)
        sids = [sid for sid, member in list(members.items()) if member.key == key]
        for sid in sids:
            self.socketio.server.disconnect(sid, namespace="/")

    def presence(self, event: str, room: str, name: str, count: int, seq=None):
        """Tell everyone in ``room`` that a user joined or left."""
        self.socketio.emit(event, presence_event(name, count, seq), to=room)

    # -- every delivery ----------------------------------------------------
    def heard(self, room: str, message: dict) -> dict | None:
        """The emit ``message`` for ``room`` as this instance delivers it,
        or None when it must not be delivered (already was)."""
        data = message.get("data")
        if not (isinstance(data, list) and data):
            return message
        payload = data[0]
        event = message.get("event")
        state = self.state
        if event == "new message" and isinstance(payload, dict):
            msg_id = payload.get("id")
            if "prev" in payload:
                prev = payload["prev"]
                payload = {k: v for k, v in payload.items() if k != "prev"}
                message = {**message, "data": [payload, *data[1:]]}
            else:
                prev = None
            if msg_id:
                state.tails.add(room, payload, prev)
            if msg_id and not state.delivered.first_time(room, payload):
                return None
            if msg_id and (sent := state.delivered.already_sent(room, msg_id)):
                message = {**message, "skip_sid": _with(message, sent)}
        elif event == "message deleted":
            # The room's kept tail may hold it: read the stream next time.
            state.tails.forget(room)
        elif event == "kicked" and isinstance(payload, dict):
            # After the room (the kicked user included) got the event.
            gevent.spawn(self._disconnect, room, str(payload.get("username")))
        elif event in ("user joined", "user left") and isinstance(payload, dict):
            view = state.counts.presence_view(room, payload)
            message = {**message, "data": [view, *data[1:]]}
        return message

    def forget(self, room: str) -> None:
        """``room`` has no local member and its channel is unsubscribed."""
        self.state.tails.forget(room)
        self.state.delivered.forget(room)
        self.state.counts.forget(room)

    def gap(self) -> None:
        """Publishes may have been lost (no subscription): no room's tail
        can be trusted until it is read from the stream again."""
        self.state.tails.clear()

    # -- the outbox and the streams ----------------------------------------
    def stored(self, room: str, entry: dict, pending: dict, sender_sid: str) -> None:
        """An outbox message now has its id: tell the others, and who saw it pending.

        This instance's users who were in the room when it was accepted saw
        it (pending): its id is marked delivered here first, so the emit
        reaches the other instances, and they get ``message stored`` naming
        its ``pendingId``. The sender's session alone gets its clientId
        back. Users who logged in here since never saw it: they get the
        message itself.
        """
        delivered = self.state.delivered
        emit = self.socketio.emit
        delivered.first_time(room, entry)
        shown = public(entry)
        emit("new message", shown, to=room, skip_sid=sender_sid)
        stored = {
            "pendingId": pending["pendingId"],
            "id": entry["id"],
            "ts": entry["ts"],
        }
        late = set(delivered.logged_in_since(room, pending["ts"]))
        emit(
            "message stored",
            stored,
            to=room,
            skip_sid=[*late, sender_sid],
            ignore_queue=True,
        )
        own = {**stored, "clientId": pending["clientId"]}
        emit("message stored", own, to=sender_sid, ignore_queue=True)
        late -= {sender_sid, *delivered.already_sent(room, entry["id"])}
        for sid in late:
            emit("new message", shown, to=sid, ignore_queue=True)

    def instance_gone(self, seconds_ago: float) -> None:
        """Another instance went away, at most ``seconds_ago``: what it
        published in its last moments may never have arrived.

        A replay that fails raises (the heartbeat tries again on its next
        beat), and the next one starts no later than this one would have:
        a retry a beat later must not move the window past the messages
        it was for."""
        since_ms = int((time.time() - seconds_ago) * 1000)
        if self._owed_since_ms is not None:
            since_ms = min(since_ms, self._owed_since_ms)
        self._owed_since_ms = since_ms
        self.replay(since_ms)
        self._owed_since_ms = None

    def replay(self, gap_started_ms: int) -> None:
        """Deliver, from the streams, what this instance may have missed.

        After a lost subscription, or when another instance went away. Ids
        already delivered here, and those a login's history had, are
        skipped. A stream that cannot be read raises (redis-py's error):
        the caller keeps the gap open and calls again, and what this call
        delivered is skipped then.
        """
        state = self.state
        self.gap()
        since = f"{gap_started_ms - REPLAY_SLACK_MS}-0"
        replayed = 0
        for room in state.presence.local.rooms():
            for entry in state.history.after(room, since, state.replay_limit):
                if state.outbox.holds(room, entry):
                    continue  # this instance's outbox announces it itself
                if state.delivered.first_time(room, entry):
                    skip = state.delivered.already_sent(room, entry["id"])
                    self.socketio.emit(
                        "new message",
                        public(entry),
                        to=room,
                        skip_sid=skip,
                        ignore_queue=True,
                    )
                    replayed += 1
        if replayed:
            log.warning("replayed %d messages from the streams", replayed)
