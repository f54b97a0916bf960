"""History shared by the cluster: one capped Redis stream per room, the
source of truth for every message's id.

``dropped`` is True when messages after the client's last id were already
trimmed away.
"""

from __future__ import annotations

import functools
import json
import logging

import redis

from chat.cluster.batching import ScriptBatcher
from chat.cluster.keys import Keys
from chat.cluster.shards import TOPOLOGY_ERRORS, node_of, refresh
from chat.messages.entries import (
    Muted,
    SlowMode,
    client_id_key,
    entry_size,
    make_entry,
    parse_id,
)

log = logging.getLogger(__name__)


# A moderator removes one entry; the room's byte count goes down by its size.
# KEYS: stream, the stream's byte count. ARGV: id. Returns 1 if it was there.
_DELETE = """
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])[1]
if not entry then return 0 end
for i = 1, #entry[2], 2 do
  if entry[2][i] == 's' then redis.call('DECRBY', KEYS[2], entry[2][i + 1]) end
end
return redis.call('XDEL', KEYS[1], ARGV[1])
"""


class NotReplicated(redis.RedisError):
    """The store reached the master but no replica confirmed it in time: the
    message is kept in the outbox (pending) until one does."""


# Stores a message once per (room, sender, clientId): a resend after a lost
# acknowledgement, or an outbox retry after a store that timed out but
# landed, gets the first id back instead of a second entry.
# KEYS: stream, clientId key ('' when none), the stream's byte count, and
# the moderation keys ('' when unchecked): the sender's mute in the room (a
# mute returns {-1, it}), the room's slow mode and the sender's marker (a
# send within the interval returns {-2, seconds left}).
# ARGV: retain, username, message, clientId, ttl, clientId ttl, the room's
# byte budget, this entry's size, and the name of an unused key ('' on one
# Redis; in the room's slot on a Redis Cluster, where every key of a script
# must be). Returns {is_new, id, prev}: ``prev`` is
# the id of the entry before the new one ('' for none), which lets an
# instance keep a room's newest messages exactly (chat.messages.tails).
# The oldest entries go until the room holds at most ``retain`` messages and
# its budget of bytes: a room's history is bounded in bytes, so MAX_ROOMS
# rooms fit the Redis memory the operator gave them, and a new message can
# always be stored.
_STORE = """
if KEYS[4] ~= ARGV[9] then
  local muted = redis.call('GET', KEYS[4])
  if muted then return {-1, muted} end
end
if KEYS[2] ~= ARGV[9] then
  local first = redis.call('GET', KEYS[2])
  if first then return {0, first} end
end
if KEYS[5] ~= ARGV[9] then
  local slow = redis.call('GET', KEYS[5])
  if slow and not redis.call('SET', KEYS[6], '1', 'NX', 'EX', slow) then
    return {-2, tostring(redis.call('TTL', KEYS[6]))}
  end
end
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = newest[1] and newest[1][1] or ''
local fields = {'u', ARGV[2], 'm', ARGV[3], 's', ARGV[8]}
if ARGV[4] ~= '' then
  table.insert(fields, 'c')
  table.insert(fields, ARGV[4])
end
local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
local bytes = redis.call('INCRBY', KEYS[3], ARGV[8])
local length = redis.call('XLEN', KEYS[1])
while length > 1 and (length > tonumber(ARGV[1]) or bytes > tonumber(ARGV[7])) do
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  local size = 0
  for i = 1, #oldest[2], 2 do
    if oldest[2][i] == 's' then size = tonumber(oldest[2][i + 1]) end
  end
  redis.call('XDEL', KEYS[1], oldest[1])
  bytes = redis.call('DECRBY', KEYS[3], size)
  length = length - 1
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[5])
if KEYS[2] ~= ARGV[9] then
  redis.call('SET', KEYS[2], id, 'EX', ARGV[6])
end
return {1, id, prev}
"""


def _survive_outage(fallback):
    """While Redis is down the chat goes on without history; say so in the log."""

    def wrap(method):
        @functools.wraps(method)
        def run(self, room, *args):
            try:
                return method(self, room, *args)
            except redis.RedisError as exc:
                log.warning("history unavailable: %s", exc)
                return fallback(room, *args)

        return run

    return wrap


class RedisHistory:
    """History shared by the cluster: one capped stream per room.

    ``store_client`` (default: ``client``) is the one ``store`` uses: give it
    a short timeout, so a hung Redis costs a sender that long at most and the
    message goes to the outbox.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys | str,
        retain: int,
        ttl_s: int = 7 * 24 * 3600,
        store_client: redis.Redis | None = None,
        client_id_ttl_s: int = 600,
        room_max_bytes: int = 256 * 1024,
        replicas: int = 0,
        replica_timeout_ms: int = 100,
        moderation_keys=None,
    ) -> None:
        self._r = client
        self._store_client = store_client or client
        # (room, sender) -> [mute, slow mode, sender's marker] keys
        # (chat.moderation), checked by the store script.
        self._moderation_keys = moderation_keys
        # STORE_REPLICAS: a message is acknowledged with its id only once
        # this many replicas have it (WAIT), so a master that dies right
        # after cannot take it with it.
        self._replicas = replicas
        self._replica_timeout_ms = replica_timeout_ms
        self._keys = keys if isinstance(keys, Keys) else Keys(keys)
        self._retain = retain
        self._room_max_bytes = room_max_bytes
        self._ttl_s = ttl_s
        self._client_id_ttl_s = client_id_ttl_s
        self._store = (store_client or client).register_script(_STORE)
        self._delete = client.register_script(_DELETE)
        self._store_batched = ScriptBatcher(self._store_client)

    def _key(self, room: str) -> str:
        return self._keys.history(room)

    @staticmethod
    def _decode(raw_id: bytes, fields: dict) -> dict:
        client_id = fields.get(b"c")
        return make_entry(
            raw_id.decode(),
            fields[b"u"].decode(),
            fields[b"m"].decode(),
            client_id.decode() if client_id else None,
        )

    def store(
        self,
        room: str,
        username: str,
        message: str,
        client_id: str | None = None,
        patient: bool = False,
    ) -> tuple[dict, bool]:
        """XADD once per ``client_id`` with an exact cap: (entry, True if new).

        Raises ``redis.RedisError`` when Redis does not answer in time (the
        store client's short timeout, or the regular one when ``patient``):
        the caller keeps the message in its outbox. The stream expires
        HISTORY_TTL_S after its last message, so rooms nobody uses do not
        stay in Redis.
        """
        unused = self._keys.unused(room)
        cid_key = (
            self._keys.client_id(room, client_id_key(room, username, client_id))
            if client_id
            else unused
        )
        checks = (
            self._moderation_keys(room, username)
            if self._moderation_keys
            else [unused] * 3
        )
        keys = [self._key(room), cid_key, self._keys.history_bytes(room), *checks]
        args = [
            self._retain,
            username,
            message,
            client_id or "",
            self._ttl_s,
            self._client_id_ttl_s,
            self._room_max_bytes,
            entry_size(username, message, client_id),
            unused,
        ]
        client = routed = self._r if patient else self._store_client
        if self._keys.cluster:
            # The room's master's own client rather than RedisCluster's
            # routing of every command (a store cost a third more CPU
            # through it). A moved slot or a failover raises here, and the
            # outbox sends again.
            client = node_of(routed.cluster, keys[0]).redis_connection
        try:
            if self._replicas:
                reply = self._store_replicated(client, keys, args)
            elif client is self._store_client:
                # With the other messages in flight (chat.cluster.batching);
                # a Cluster node's client sends alone.
                reply = self._store_batched(self._store, keys, args)
            else:
                reply = self._store(keys=keys, args=args, client=client)
        except TOPOLOGY_ERRORS:
            if self._keys.cluster:
                refresh(routed.cluster)  # a failover: ask again on retry
            raise
        is_new, raw_id, *prev = reply
        if is_new == -1:
            raise Muted(json.loads(raw_id))
        if is_new == -2:
            raise SlowMode(max(1, int(raw_id)))
        entry = make_entry(raw_id.decode(), username, message, client_id)
        if prev:
            # Travels with the message to the instances (chat.messages.tails),
            # and is taken off before delivering (chat.messages.fanout).
            entry["prev"] = prev[0].decode()
        return entry, bool(is_new)

    def _store_replicated(self, client, keys: list[str], args: list) -> list:
        """The store script, then ``WAIT``: one connection (WAIT counts the
        replicas that have this connection's writes), one round trip.

        By ``EVALSHA`` rather than a script on a pipeline, which asks
        ``SCRIPT EXISTS`` first on every execute (one more round trip per
        message). A master without the script (restarted, or a promoted
        replica) ran nothing but the WAIT: load it and send both again.
        """
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)
            pipe.evalsha(self._store.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", self._replicas, self._replica_timeout_ms)
            reply, replicated = pipe.execute(raise_on_error=False)
            if isinstance(reply, redis.exceptions.NoScriptError) and not attempt:
                client.script_load(_STORE)
                continue
            for answer in (reply, replicated):
                if isinstance(answer, Exception):
                    raise answer
            break
        if int(replicated) < self._replicas:
            raise NotReplicated(
                f"{replicated} of {self._replicas} replicas confirmed the "
                f"store within {self._replica_timeout_ms} ms"
            )
        return reply

    def delete(self, room: str, entry_id: str) -> bool:
        """Remove one message from the room's history (moderation)."""
        key = self._key(room)
        keys = [key, self._keys.history_bytes(room)]
        return bool(self._delete(keys=keys, args=[entry_id]))

    def newest(self, room: str, count: int) -> list[dict]:
        """The last ``count`` messages, oldest first."""
        found = self.read_newest(room, count)
        return [] if found is None else found

    @_survive_outage(lambda room, count: None)
    def read_newest(self, room: str, count: int) -> list[dict] | None:
        """As ``newest``, but None when Redis could not be read."""
        if count <= 0:
            return []
        rows = self._r.xrevrange(self._key(room), count=count)
        return [self._decode(i, f) for i, f in reversed(rows)]

    def after(self, room: str, after_id: str, limit: int) -> list[dict]:
        """Up to ``limit`` messages after ``after_id``, oldest first (for replay).

        Raises when Redis cannot be read: an empty answer would close a
        replay's gap with nothing replayed. A Redis that restarts from its
        AOF takes SUBSCRIBE and PUBLISH while it loads but answers reads
        with ``LOADING``: the listener is back, and the replay must wait.
        """
        rows = self._r.xrange(self._key(room), min=f"({after_id}", count=limit)
        return [self._decode(i, f) for i, f in rows]

    @_survive_outage(lambda room, last_id, limit: ([], True))
    def since(self, room: str, last_id: str, limit: int) -> tuple[list[dict], bool]:
        """The newest ``limit`` messages after ``last_id``; True if some were lost."""
        after = parse_id(last_id)
        if after < (0, 0):
            return self.newest(room, limit), True
        start = f"({after[0]}-{after[1]}"
        # One round trip for both (every login after a reconnect does this).
        pipe = self._r.pipeline(transaction=False)
        pipe.xrevrange(self._key(room), min=start, count=limit + 1)
        pipe.xinfo_stream(self._key(room))
        rows, info = pipe.execute(raise_on_error=False)
        if isinstance(rows, Exception):
            raise rows
        found = [self._decode(i, f) for i, f in reversed(rows)]
        if isinstance(info, redis.ResponseError):  # no such stream
            return found[-limit:], len(found) > limit
        if isinstance(info, Exception):
            raise info
        return found[-limit:], self._trimmed_after(info, after) or len(found) > limit

    def _trimmed_after(self, info: dict, after: tuple[int, int]) -> bool:
        """Whether the cap may have trimmed entries newer than ``after``.

        Redis's ``max-deleted-entry-id`` counts XDEL only, not MAXLEN
        trimming, so it cannot say. Trimming removes the oldest first: if
        anything was ever trimmed and ``after`` is older than the oldest
        entry left, entries after it may be gone (a client whose last id was
        exactly the newest trimmed one is told so too: over-reporting a
        loss, never hiding one). Redis before 7 has no ``entries-added``: a
        stream at its cap counts as trimmed.
        """
        first = info.get("first-entry")
        if not first:
            return False
        added = info.get("entries-added")
        trimmed_any = (
            added > info["length"]
            if added is not None
            else (info["length"] >= self._retain)
        )
        return trimmed_any and after < parse_id(first[0].decode())
