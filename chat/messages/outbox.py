"""Where an accepted message goes: the stream, or the outbox while Redis is away.

The stream gives a message its id and is the source of truth. A store that
Redis does not answer within STORE_TIMEOUT_S puts the message in this
instance's outbox instead: it is delivered to local users at once as
pending, and written to the stream (and published) in order when Redis
answers again, before any newer message, each once thanks to its clientId.
The outbox is bounded; past the bound a message is refused, never dropped.
"""

from __future__ import annotations

import collections
import logging
import uuid
from dataclasses import dataclass

import redis

from chat.messages.entries import Muted, SlowMode, client_id_key, pending_entry
from chat.validation import Refused

log = logging.getLogger(__name__)

RETRY_S = (0.05, 0.2, 0.5, 1.0)


def is_out_of_memory(exc: Exception) -> bool:
    """Redis refused a write because it reached ``maxmemory``."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or (
        isinstance(exc, redis.ResponseError) and "maxmemory" in str(exc)
    )


@dataclass(frozen=True)
class Accepted:
    """What became of a message: ``status`` is stored, duplicate or pending.

    A duplicate (a resend of a clientId already stored, or already waiting
    in the outbox) is acknowledged and not delivered again.
    """

    entry: dict
    status: str


@dataclass(frozen=True)
class _Waiting:
    room: str
    entry: dict
    sender_sid: str
    size: int


class Outbox:
    """Stores messages in history, keeping them here while it cannot."""

    def __init__(
        self,
        history,
        max_messages: int = 10000,
        max_bytes: int = 16 * 1024 * 1024,
        spawn=None,
        sleep=None,
    ) -> None:
        self._history = history
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._spawn = spawn
        self._sleep = sleep
        self._waiting: collections.deque[_Waiting] = collections.deque()
        # client_id_key(room, sender, clientId) -> its pending entry
        self._client_ids: dict[str, dict] = {}
        self._bytes = 0
        self._flusher = None
        # Set by the app: announce a message the outbox has now stored
        # (room, stored entry, the pending entry, sender's sid).
        self.on_stored = lambda room, entry, pending, sender_sid: None

    def holds(self, room: str, entry: dict) -> bool:
        """True while the outbox has this message (stored or not, unannounced)."""
        client_id = entry.get("clientId")
        if client_id is None:
            return False
        return client_id_key(room, entry["username"], client_id) in self._client_ids

    def accept(
        self, room: str, username: str, text: str, client_id: str | None, sender_sid
    ) -> Accepted:
        """Store the message, or keep it in the outbox; Refused when that is full."""
        if not self._waiting:
            try:
                entry, is_new = self._history.store(room, username, text, client_id)
            except redis.RedisError as exc:
                if is_out_of_memory(exc):
                    # Redis answered, and will refuse again: the sender is
                    # told now instead of waiting on an outbox that cannot
                    # drain.
                    log.error("Redis is out of memory (OOM); message refused: %s", exc)
                    raise Refused(
                        "storage_full", "The chat's storage is full; try again later."
                    ) from None
                log.warning("store not confirmed, keeping it in the outbox: %s", exc)
            else:
                return Accepted(entry, "stored" if is_new else "duplicate")
        key = client_id and client_id_key(room, username, client_id)
        if key in self._client_ids:
            # A resend of a message already waiting here: once is enough.
            return Accepted(self._client_ids[key], "duplicate")
        entry = self._keep(room, username, text, client_id, sender_sid)
        return Accepted(entry, "pending")

    def _keep(self, room, username, text, client_id, sender_sid) -> dict:
        size = len(text.encode()) + len(username) + 64
        if (
            len(self._waiting) >= self._max_messages
            or self._bytes + size > self._max_bytes
        ):
            raise Refused("unavailable", "The chat cannot store messages right now.")
        # A clientId makes the retry idempotent even if the store that timed
        # out did land in Redis after all.
        entry = pending_entry(username, text, client_id or uuid.uuid4().hex)
        self._waiting.append(_Waiting(room, entry, sender_sid, size))
        self._client_ids[client_id_key(room, username, entry["clientId"])] = entry
        self._bytes += size
        if self._flusher is None:
            self._flusher = self._spawn(self._flush)
        return entry

    def _flush(self) -> None:
        """Write the outbox to the streams in order; back off while Redis is away."""
        attempt = 0
        try:
            while self._waiting:
                head = self._waiting[0]
                entry = head.entry
                try:
                    stored, _ = self._history.store(
                        head.room,
                        entry["username"],
                        entry["message"],
                        entry["clientId"],
                        patient=True,
                    )
                except redis.RedisError:
                    self._sleep(RETRY_S[min(attempt, len(RETRY_S) - 1)])
                    attempt += 1
                    continue
                except (Muted, SlowMode):
                    # Muted (or in a slow room) while it waited: not stored.
                    log.info("dropped a waiting message: moderation refused it")
                    self._forget_head()
                    continue
                attempt = 0
                self._waiting.popleft()
                self._bytes -= head.size
                try:
                    self.on_stored(head.room, stored, entry, head.sender_sid)
                except Exception:
                    log.exception("announcing a stored message failed")
                self._client_ids.pop(
                    client_id_key(head.room, entry["username"], entry["clientId"]),
                    None,
                )
            log.warning("outbox flushed")
        finally:
            self._flusher = None

    def _forget_head(self) -> None:
        head = self._waiting.popleft()
        self._bytes -= head.size
        entry = head.entry
        self._client_ids.pop(
            client_id_key(head.room, entry["username"], entry["clientId"]), None
        )
