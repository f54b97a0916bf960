"""A login's history: the room's newest messages, or those missed since
its ``lastId``, from the room's tail kept here (chat.messages.tails) when
it can say exactly, else from the stream; with the messages delivered here
while the stream was read."""

from __future__ import annotations

import logging

from chat.messages.entries import is_entry_id, parse_id, public
from chat.observe import metrics

log = logging.getLogger(__name__)
# Where a login's history came from, looked up once (``labels`` locks and
# checks its arguments on every call).
_KEPT = metrics.HISTORY_READS.labels("kept")
_STREAM = metrics.HISTORY_READS.labels("stream")


def _from_tail(state, config, room: str, last_id: str | None) -> list[dict] | None:
    """History from the room's newest messages kept here; None if they
    cannot say exactly."""
    if last_id is None:
        return state.tails.newest(room, config["HISTORY_LENGTH"])
    return state.tails.after(room, last_id, config["HISTORY_CATCHUP_MAX"])


def _read(state, config, room: str, last_id: str | None) -> tuple[list, bool, bool]:
    """History read from the stream: (messages, dropped, newest), where
    ``newest`` says the room's newest messages were read from Redis."""
    if last_id is not None:
        found, dropped = state.history.since(
            room, last_id, config["HISTORY_CATCHUP_MAX"]
        )
        return found, dropped, False
    if not config["REDIS_URL"]:
        return state.history.newest(room, config["HISTORY_LENGTH"]), False, False
    found = state.history.read_newest(room, config["HISTORY_LENGTH"])
    return (found, False, True) if found is not None else ([], False, False)


def catch_up(
    state, manager, config, room: str, last_id, sid: str
) -> tuple[dict, tuple[int, int], frozenset]:
    """The ``history`` payload of the login of ``sid``: the room's newest
    messages, or those missed since ``last_id``.

    Catch-up is capped at HISTORY_CATCHUP_MAX (the newest of those missed,
    with ``dropped: true``). A ``lastId`` that is not an id is no ``lastId``.
    Messages this instance delivered to the room while the stream was read
    are added: the socket is not in the room yet, and they may be too new
    for what was read. Also returns what the login now has (see
    ``Delivered.note_catch_up``): the newest id read, and the ids added.
    """
    if config["REDIS_URL"]:
        # Noted before the read: a message stored while it runs must reach
        # this user (see chat.messages.fanout, ``stored``).
        state.delivered.note_login(room, sid)
    if not is_entry_id(last_id):
        if last_id is not None:
            log.debug("ignoring a malformed lastId", extra={"sid": sid})
        last_id = None
    since, dropped = last_id, False
    # The newest messages as this instance heard them: no read, so nothing
    # can be delivered meanwhile.
    heard = config["REDIS_URL"] and manager.hears(room)
    messages = _from_tail(state, config, room, last_id) if heard else None
    if messages is not None:
        _KEPT.inc()
        meanwhile = []
    else:
        if config["REDIS_URL"]:
            _STREAM.inc()
        start = state.delivered.open_window(room)
        try:
            messages, dropped, newest = _read(state, config, room, last_id)
            meanwhile = state.delivered.window(room, start)
        finally:
            state.delivered.close_window(room)
        # A read that nothing was delivered during, of a room still heard,
        # starts the room's tail.
        if newest and not meanwhile and manager.hears(room):
            count = config["HISTORY_LENGTH"]
            state.tails.start(room, messages, whole=len(messages) < count)
    read_up_to = max(
        [parse_id(since) if since else (0, 0)]
        + [parse_id(m["id"]) for m in messages[-1:]]
    )
    added = []
    if meanwhile:
        known = {m["id"] for m in messages}
        added = [m for m in meanwhile if m["id"] not in known]
    if added:
        messages = sorted(messages + added, key=lambda m: parse_id(m["id"]))
    history = {
        # (``public`` copies only a message that carries a clientId.)
        "messages": [m if "clientId" not in m else public(m) for m in messages],
        "dropped": dropped,
        "since": since,
    }
    return history, read_up_to, frozenset(m["id"] for m in added)
