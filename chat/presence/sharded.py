"""Cluster presence on a Redis Cluster: the same promises as on one Redis,
with every script inside one room's slot.

On one Redis a join, a leave and a reaping are each one script over the
room, the instance's member list, the reaped sessions and the room count.
On a cluster those keys live on different shards, so the steps that are not
the room's go beside the room's script, in an order that never leaves a
name nobody can clean up:

- a join registers the session in its instance's member list *before* the
  room's script claims the name, so an instance killed in between leaves
  at most a member entry that reaping finds holding nothing;
- a leave drops the member entry, then releases the name; a room left empty
  without history is uncounted after;
- a reaping is claimed with a lock that expires (``SET NX EX``) instead of
  the ``SREM`` that claims it on one Redis: a reaper that dies half way
  leaves the rest to the next one, and each member's removal is the leave
  script, which does nothing twice.
"""

from __future__ import annotations

import json

from chat.cluster.shards import NodePipelines
from chat.presence.member import Member
from chat.presence.redis_store import RedisPresence
from chat.presence.scripts import JOIN_ROOM, LEAVE_ROOM, SEQ_TTL_S


class ShardedPresence(RedisPresence):
    """``RedisPresence`` on a Redis Cluster (chat.cluster.keys has the tags)."""

    # A login's checks are on other shards than its room: read apart.
    checks_in_join = False

    def _register_scripts(self, client) -> None:
        self._join_room = client.register_script(JOIN_ROOM)
        self._leave_room = client.register_script(LEAVE_ROOM)

    def _room_join_call(self, member: Member, list_up_to: int) -> tuple:
        """The room script's keys and arguments for ``member``."""
        keys = [self._room_key(member.room), self._seq_key(member.room)]
        args = [
            member.key,
            self._encode(member),
            member.token,
            member.sid,
            list_up_to,
            SEQ_TTL_S,
        ]
        return keys, args

    def _register(self, members: list[Member]) -> list[int]:
        """Each member in this instance's list (before its name is claimed),
        in one round trip; for each, whether a reaping had removed it."""
        pipe = self._r.pipeline(transaction=False)
        for member in members:
            pipe.hset(
                self._members_key(self.instance_id), member.sid, self._encode(member)
            )
            pipe.hdel(self._keys.reaped, member.sid)
        return pipe.execute()[1::2]

    def _settle(self, member: Member, reply: list) -> list:
        """After the room's script: keep the member list true."""
        ok, _, replaced, _, previous, *_ = reply
        if not ok:
            self._r.hdel(self._members_key(self.instance_id), member.sid)
        elif previous:
            # The session it replaced was on another instance.
            self._r.hdel(self._members_key(previous.decode()), replaced)
        return reply

    def _join_one(self, member: Member, list_up_to: int, checks=()) -> list:
        [rejoined] = self._register([member])
        keys, args = self._room_join_call(member, list_up_to)
        reply = self._settle(member, self._join_room(keys=keys, args=args))
        return [*reply[:4], rejoined, *reply[5:]]

    def _join_many(self, members: list[Member]) -> list[list]:
        if not members:
            return []
        rejoined = self._register(members)
        rooms = NodePipelines(self._r.cluster)
        for member in members:
            rooms.script(self._join_room, *self._room_join_call(member, 0))
        replies = []
        for member, again, reply in zip(
            members, rejoined, rooms.execute(), strict=True
        ):
            reply = self._settle(member, reply)
            replies.append([*reply[:4], again, *reply[5:]])
        return replies

    def _leave_keys(self, room: str) -> list[str]:
        return [self._room_key(room), self._seq_key(room), self._keys.history(room)]

    def _release(self, member: Member) -> list:
        self._r.hdel(self._members_key(self.instance_id), member.sid)
        removed, count, seq, uncount = self._leave_room(
            keys=self._leave_keys(member.room),
            args=[member.key, member.sid, SEQ_TTL_S],
        )
        if uncount and self._r.zrem(self._keys.rooms, member.room):
            self.on_uncounted(member.room)
        return [removed, count, seq]

    def _reap_instance(self, instance_id: str, forced: bool) -> list:
        lock = self._keys.reaping(instance_id)
        if not forced and not self._r.set(
            lock, self.instance_id, nx=True, ex=max(1, self._ttl_s)
        ):
            return []  # another instance is reaping it
        members_key = self._members_key(instance_id)
        registered = [
            (sid.decode(), json.loads(raw))
            for sid, raw in self._r.hgetall(members_key).items()
        ]
        registered = [(sid, found) for sid, found in registered if found]
        rooms = NodePipelines(self._r.cluster)
        for sid, found in registered:
            rooms.script(
                self._leave_room,
                self._leave_keys(found["room"]),
                [found["key"], sid, SEQ_TTL_S],
            )
        out: list = []
        after = self._r.pipeline(transaction=False)
        for (sid, found), (removed, count, seq, uncount) in zip(
            registered, rooms.execute(), strict=True
        ):
            if removed:
                out += [found["room"].encode(), found["name"].encode(), count, seq]
                if not forced:
                    after.hset(self._keys.reaped, sid, "1")
                    after.expire(self._keys.reaped, 86400)
            if uncount:
                after.zrem(self._keys.rooms, found["room"])
        after.delete(members_key)
        if not forced:
            after.srem(self._instances_key, instance_id)
            after.delete(lock)
        after.execute()
        return out
