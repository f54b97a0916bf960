"""Cluster-wide presence in Redis, with no ghosts when an instance dies.

Layout (prefix ``chat:``):
- ``room:<room>:users``      hash, casefolded name -> member JSON (+ instance)
- ``instance:<id>:members``  hash, sid -> member JSON: what to clean up if it dies
- ``instance:<id>:alive``    key with a TTL, refreshed by the heartbeat
- ``instances``              set of instance ids that may hold members

Every instance beats every ``PRESENCE_HEARTBEAT_S`` and reaps instances whose
alive key has expired; ``SREM`` decides which instance announces the leaves,
so each ghost is announced once. The local members are the truth: when Redis
lost them (restart, outage), the next beat writes them back.
"""

from __future__ import annotations

import json
import logging
import math
import time

import redis

from chat.presence import JoinResult, Member

log = logging.getLogger(__name__)

# KEYS: room users, this instance's members, room sequence, reaped sids.
# Returns {ok, count, replaced sid, seq, rejoined, names}: ``rejoined`` is 1
# when the room was told this session had left (a reaping), so it must hear
# a join; ``names`` lists the room when it has at most ARGV[6] users (the
# login's list, in the same round trip).
# A name is taken from its holder with the holder's token and nothing else:
# not during a hand-over, not after an outage. A refusal returns the
# holder's name (the rebuild after an outage announces it).
_JOIN = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local replaced = ''
if cur then
  local holder = cjson.decode(cur)
  if holder.token ~= ARGV[3] then
    return {0, redis.call('HLEN', KEYS[1]), '', 0, 0, holder.name}
  end
  replaced = holder.sid
  if holder.sid ~= ARGV[4] then
    redis.call('HDEL', ARGV[5] .. 'instance:' .. holder.instance .. ':members',
               holder.sid)
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[2])
local seq = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[7])
local rejoined = redis.call('HDEL', KEYS[4], ARGV[4])
local count = redis.call('HLEN', KEYS[1])
local names = {}
if count <= tonumber(ARGV[6]) then
  for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
    table.insert(names, cjson.decode(v).name)
  end
end
return {1, count, replaced, seq, rejoined, names}
"""

# KEYS: room users, this instance's members, room sequence, the rooms
# counted (chat.rooms), the room's history. ARGV: name key, sid, room, the
# sequence's TTL. A room left with neither members nor history no longer
# counts toward MAX_ROOMS.
_LEAVE = """
redis.call('HDEL', KEYS[2], ARGV[2])
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cjson.decode(cur).sid == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  local left = redis.call('HLEN', KEYS[1])
  if left == 0 and redis.call('EXISTS', KEYS[5]) == 0 then
    redis.call('ZREM', KEYS[4], ARGV[3])
  end
  local seq = redis.call('INCR', KEYS[3])
  if left == 0 then
    redis.call('DEL', KEYS[3])
  else
    redis.call('EXPIRE', KEYS[3], ARGV[4])
  end
  return {1, left, seq}
end
return {0, redis.call('HLEN', KEYS[1]), 0}
"""

# Removes every member an instance registered. Unless forced (an instance
# cleaning up after itself), only the caller that wins the SREM does it, and
# it remembers the reaped sessions: if one turns out to be alive (its
# instance was only cut off), its rebuild tells the room it is back.
_REAP = """
if ARGV[3] ~= '1' and redis.call('SREM', KEYS[1], ARGV[2]) == 0 then
  return {}
end
local mkey = ARGV[1] .. 'instance:' .. ARGV[2] .. ':members'
local reaped = ARGV[1] .. 'reaped'
local flat = redis.call('HGETALL', mkey)
local out = {}
for i = 1, #flat, 2 do
  local m = cjson.decode(flat[i + 1])
  local rkey = ARGV[1] .. 'room:' .. m.room .. ':users'
  local lname = m.key
  local cur = redis.call('HGET', rkey, lname)
  if cur and cjson.decode(cur).sid == flat[i] then
    redis.call('HDEL', rkey, lname)
    if ARGV[3] ~= '1' then
      redis.call('HSET', reaped, flat[i], '1')
      redis.call('EXPIRE', reaped, 86400)
    end
    table.insert(out, m.room)
    table.insert(out, m.name)
    table.insert(out, redis.call('HLEN', rkey))
    local skey = ARGV[1] .. 'room:' .. m.room .. ':seq'
    table.insert(out, redis.call('INCR', skey))
    redis.call('EXPIRE', skey, ARGV[4])
    if redis.call('HLEN', rkey) == 0 then
      redis.call('DEL', skey)
      if redis.call('EXISTS', ARGV[1] .. 'history:' .. m.room) == 0 then
        redis.call('ZREM', ARGV[1] .. 'rooms', m.room)
      end
    end
  end
end
redis.call('DEL', mkey)
return out
"""


# A room's presence sequence lives a day past its last join or leave: an
# instance forgets a room's newest count once it has no member there (after
# ROOM_LINGER_S), so a sequence that starts again after a day misleads none.
# An empty room's sequence goes with its last member: every instance forgets
# a room's count when told it is empty (chat.delivery), so the next join
# starts again from 1 and a one-off room leaves no key.
SEQ_TTL_S = 86400


class RedisPresence:
    """Presence shared by all instances through one Redis."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        instance_id: str,
        heartbeat_s: float,
        ttl_s: int,
    ) -> None:
        self.local: dict[str, Member] = {}
        self.degraded_reason: str | None = None
        self.instance_id = instance_id
        self._r = client
        self._p = prefix
        self._heartbeat_s = heartbeat_s
        self._ttl_s = ttl_s
        self._dirty = True
        self._running = False
        # Set on a graceful shutdown: members stay in Redis for the grace.
        self._handing_over = False
        self._beaten = False
        # Reaping others needs a clear view: no Redis error of our own
        # within the TTL (a stall that hid their beats hid ours too).
        self._last_error_at = -float(ttl_s)
        self._last_renewed = time.monotonic()
        # Sessions whose join script may have run while the reply is not in.
        self._joining: set[str] = set()
        # Instances seen registered at the last beat; set by the app: what
        # to do when one has gone (its last publishes may be lost with it).
        self._known_instances: set[bytes] = set()
        self.on_instance_gone = lambda seconds_ago: None
        # Set by the app: tell a session it lost its name (after an outage).
        self.on_name_lost = lambda member: None
        self.last_beat_attempt = time.monotonic()
        self._join = client.register_script(_JOIN)
        self._leave = client.register_script(_LEAVE)
        self._reap = client.register_script(_REAP)

    # -- keys --------------------------------------------------------------
    def _room_key(self, room: str) -> str:
        return f"{self._p}room:{room}:users"

    def _members_key(self, instance_id: str) -> str:
        return f"{self._p}instance:{instance_id}:members"

    def _seq_key(self, room: str) -> str:
        return f"{self._p}room:{room}:seq"

    def _alive_key(self, instance_id: str) -> str:
        return f"{self._p}instance:{instance_id}:alive"

    @property
    def _instances_key(self) -> str:
        return f"{self._p}instances"

    # -- the presence interface ------------------------------------------
    def _encode(self, member: Member) -> str:
        return json.dumps(
            {**member.to_dict(), "key": member.key, "instance": self.instance_id}
        )

    def _redis_join(self, member: Member, client=None, list_up_to: int = 0) -> object:
        return self._join(
            keys=[
                self._room_key(member.room),
                self._members_key(self.instance_id),
                self._seq_key(member.room),
                f"{self._p}reaped",
            ],
            args=[
                member.key,
                self._encode(member),
                member.token,
                member.sid,
                self._p,
                list_up_to,
                SEQ_TTL_S,
            ],
            client=client,
        )

    def join(self, member: Member, list_up_to: int = 0) -> JoinResult:
        """Claim the name cluster-wide; while Redis is down, among local users.

        The room's names come back with it when it has at most
        ``list_up_to`` users.
        """
        self._joining.add(member.sid)
        try:
            ok, count, replaced, seq, _, *names = self._redis_join(
                member, list_up_to=list_up_to
            )
        except redis.RedisError as exc:
            return self._join_degraded(member, exc, list_up_to)
        finally:
            self._joining.discard(member.sid)
        if not ok:
            return JoinResult(False, int(count))
        replaced_sid = replaced.decode() if replaced else None
        self.local.pop(replaced_sid or "", None)
        self.local[member.sid] = member
        listed = None
        if int(count) <= list_up_to:
            listed = sorted((n.decode() for n in names[0]), key=str.casefold)
        return JoinResult(True, int(count), replaced_sid, int(seq), listed)

    def _join_degraded(
        self, member: Member, exc: Exception, list_up_to: int
    ) -> JoinResult:
        self.mark_degraded(exc)
        same_room = [m for m in self.local.values() if m.room == member.room]
        holder = next((m for m in same_room if m.key == member.key), None)
        if holder is not None and holder.token != member.token:
            return JoinResult(False, len(same_room))
        if holder is not None:
            self.local.pop(holder.sid)
        self.local[member.sid] = member
        count = len(same_room) + (0 if holder else 1)
        listed = None
        if count <= list_up_to:
            listed = self._local_names(member.room)
        return JoinResult(True, count, holder.sid if holder else None, None, listed)

    def leave(self, sid: str) -> tuple[Member | None, int, int | None]:
        """Release the session's name if it still holds it: (member, count, seq).

        While handing over (``hand_over``) the name stays in Redis for the
        grace period: nothing is released and nobody is told.
        """
        member = self.local.pop(sid, None)
        if member is None or self._handing_over:
            return None, 0, None
        try:
            removed, count, seq = self._release(member)
        except redis.RedisError as exc:
            self.mark_degraded(exc)
            return member, self._local_count(member.room), None
        return (member if removed else None), int(count), int(seq)

    def _release(self, member: Member) -> list:
        """The leave script: [removed, count, seq]."""
        return self._leave(
            keys=[
                self._room_key(member.room),
                self._members_key(self.instance_id),
                self._seq_key(member.room),
                f"{self._p}rooms",
                f"{self._p}history:{member.room}",
            ],
            args=[member.key, member.sid, member.room, SEQ_TTL_S],
        )

    def _local_names(self, room: str) -> list[str]:
        return sorted(
            (m.name for m in self.local.values() if m.room == room), key=str.casefold
        )

    def _local_count(self, room: str) -> int:
        return sum(1 for m in self.local.values() if m.room == room)

    # -- health ------------------------------------------------------------
    def mark_degraded(self, exc: Exception) -> None:
        """Serve local users only until a heartbeat has rebuilt presence."""
        self._dirty = True
        self._last_error_at = time.monotonic()
        if self.degraded_reason is None:
            log.error("Redis unavailable, serving local users only: %s", exc)
        self.degraded_reason = f"redis: {exc}"

    def _mark_healthy(self) -> None:
        if self.degraded_reason is not None:
            log.warning(
                "Redis is back; presence rebuilt from %d local users", len(self.local)
            )
        self.degraded_reason = None

    # -- heartbeat and reaping -------------------------------------------
    def start(self, announce, spawn, sleep) -> None:
        """Beat now (so a new instance is visible at once), then every interval.

        ``announce(event, room, name, count, seq)`` tells a room that a user
        of a dead instance left, or that a user wrongly reaped is back.
        """
        self._running = True
        self.beat(announce)

        def loop() -> None:
            while self._running:
                sleep(self._heartbeat_s)
                if self._running:
                    self.beat(announce)

        spawn(loop)

    def beat(self, announce) -> None:
        """Refresh the lease, rebuild if Redis lost us, reap the dead.

        Never raises: the loop that calls it must outlive any error, or the
        lease lapses and the other instances reap every user of this one.
        """
        started = self.last_beat_attempt = time.monotonic()
        try:
            was_alive = self._r.set(
                self._alive_key(self.instance_id), "1", ex=self._ttl_s, get=True
            )
            lapsed = was_alive is None and self._beaten
            if lapsed or self._stalled(started):
                # Our own lease lapsed, or renewing it was slow: whatever
                # held us up held the others' renewals up too. Reap no one
                # until a whole TTL has passed without that. (A first beat
                # finds no lease: that is a start, not a lapse.)
                self._last_error_at = time.monotonic()
            self._beaten = True
            self._last_renewed = time.monotonic()
            if was_alive is None or self._dirty:
                self._rebuild(announce)
            self._sweep(announce)
            if time.monotonic() - self._last_error_at >= self._ttl_s:
                for room, name, count, seq in self._reap_dead():
                    announce("user left", room, name, count, seq)
        except redis.RedisError as exc:
            self.mark_degraded(exc)
            return
        except Exception:
            log.exception("presence heartbeat failed; trying again next beat")
            self._dirty = True
            return
        self._mark_healthy()

    def _stalled(self, started: float) -> bool:
        """True if this renewal took long, or came long after the last one."""
        took = time.monotonic() - started
        late = started - self._last_renewed > 2 * self._heartbeat_s
        return took > self._heartbeat_s / 2 or late

    def _rebuild(self, announce) -> None:
        members = list(self.local.values())  # a snapshot: logins go on meanwhile
        self._reap(
            keys=[self._instances_key], args=[self._p, self.instance_id, "1", SEQ_TTL_S]
        )
        pipe = self._r.pipeline(transaction=False)
        for member in members:
            self._redis_join(member, client=pipe)
        for member, result in zip(members, pipe.execute(), strict=True):
            ok, count, _, seq, rejoined, *rest = result
            if not ok:
                self._lost_in_outage(member, int(count), rest[0].decode(), announce)
            elif self.local.get(member.sid) is not member:
                # It left while the rebuild waited on Redis: its leave ran
                # before the rebuild wrote it back, so release it again.
                self._release(member)
            elif rejoined:
                announce("user joined", member.room, member.name, int(count), int(seq))
        self._r.sadd(self._instances_key, self.instance_id)
        self._dirty = False

    def _lost_in_outage(self, member: Member, count: int, holder: str, announce):
        """Two sessions took one name while Redis was away; the one Redis
        kept wins. This one is told and logged out, and the room hears a
        leave and a join, so every page ends with the holder online."""
        log.info(
            "a name was taken on two instances during an outage; this one lost",
            extra={"room": member.room, "sid": member.sid},
        )
        if self.local.get(member.sid) is member:
            del self.local[member.sid]
        self.on_name_lost(member)
        announce("user left", member.room, member.name, count, None)
        announce("user joined", member.room, holder, count, None)

    def _sweep(self, announce) -> None:
        """Release names Redis holds for sessions of this instance that ended.

        Serialised logins leave none; this catches what any other path
        might, within one heartbeat.
        """
        registered = self._r.hgetall(self._members_key(self.instance_id))
        for raw_sid, raw in registered.items():
            sid = raw_sid.decode()
            if sid in self.local or sid in self._joining:
                continue
            found = json.loads(raw)
            ghost = Member(sid, found["room"], found["name"], found["token"])
            removed, count, seq = self._release(ghost)
            if removed:
                log.warning("released a name no session held", extra={"sid": sid})
                announce("user left", ghost.room, ghost.name, int(count), int(seq))

    def _reap_dead(self) -> list[tuple[str, str, int, int]]:
        left: list[tuple[str, str, int, int]] = []
        registered = self._r.smembers(self._instances_key)
        if self._known_instances - registered:
            # Reaped here or elsewhere, or deregistered: what it published
            # in its last moments may never have reached us.
            self.on_instance_gone(self._ttl_s + 2 * self._heartbeat_s)
        self._known_instances = registered
        for raw in registered:
            other = raw.decode()
            if other == self.instance_id or self._r.exists(self._alive_key(other)):
                continue
            flat = self._reap(
                keys=[self._instances_key], args=[self._p, other, "0", SEQ_TTL_S]
            )
            found = [
                (
                    flat[i].decode(),
                    flat[i + 1].decode(),
                    int(flat[i + 2]),
                    int(flat[i + 3]),
                )
                for i in range(0, len(flat), 4)
            ]
            log.warning(
                "instance %s stopped beating; removed %d of its users",
                other,
                len(found),
            )
            left.extend(found)
        return left

    def hand_over(self, grace_s: float) -> list[tuple[Member, int, int | None]]:
        """Leave the cluster quietly: members with their own token stay
        online for ``grace_s``; the others leave now (returned, to announce).

        On a graceful restart the pages of this instance's users reconnect
        through the load balancer to another instance within seconds and
        reclaim their names with their tokens, which is silent. A client
        that brought no token (the stock example page) could never reclaim
        its name, and nobody may take it without the token: it leaves now,
        and joins again when it comes back. The lease is shortened to the
        grace and no longer renewed; once it expires another instance reaps
        whoever did not come back and announces them as left, once (the
        same path as an instance that died).
        """
        self._running = False
        gone = [
            pair
            for sid, member in list(self.local.items())
            if not member.proven and (pair := self.leave(sid))[0]
        ]
        self._handing_over = True
        seconds = max(1, math.ceil(grace_s))
        try:
            self._r.set(self._alive_key(self.instance_id), "1", ex=seconds)
        except redis.RedisError as exc:
            log.error("could not shorten the lease for the hand-over: %s", exc)
        log.info(
            "handing over %d users: kept online for %.0f s",
            len(self.local),
            grace_s,
            extra={"instance": self.instance_id},
        )
        return gone

    def stop(self) -> list[tuple[Member, int, int | None]]:
        """Leave the cluster: release every local member and the lease."""
        self._running = False
        gone = [pair for sid in list(self.local) if (pair := self.leave(sid))[0]]
        try:
            self._r.srem(self._instances_key, self.instance_id)
            self._r.delete(
                self._alive_key(self.instance_id), self._members_key(self.instance_id)
            )
        except redis.RedisError as exc:
            log.error("could not deregister from Redis: %s", exc)
        return gone
