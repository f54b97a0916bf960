"""Cluster-wide presence in Redis, with no ghosts when an instance dies.

Layout (prefix ``chat:``; on a Redis Cluster the names carry hash tags,
chat.cluster.keys):
- ``room:<room>:users``      hash, casefolded name -> member JSON (+ instance)
- ``instance:<id>:members``  hash, sid -> member JSON: what to clean up if it dies
- ``instance:<id>:alive``    key with a TTL, refreshed by the heartbeat
- ``instances``              set of instance ids that may hold members

Joins and leaves are scripts (chat.presence.scripts); the heartbeat, sweep,
reaping and hand-over are ``Upkeep`` (chat.presence.upkeep).
"""

from __future__ import annotations

import json
import logging
import time

import redis

from chat.cluster.batching import ScriptBatcher
from chat.cluster.keys import Keys
from chat.presence.local import LocalMembers
from chat.presence.member import JoinResult, Member
from chat.presence.scripts import JOIN, LEAVE, REAP, SEQ_TTL_S
from chat.presence.upkeep import Upkeep
from chat.validation import name_key

log = logging.getLogger(__name__)


class RedisPresence(Upkeep):
    """Presence shared by all instances through one Redis."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys | str,
        instance_id: str,
        heartbeat_s: float,
        ttl_s: int,
    ) -> None:
        self.local = LocalMembers()
        self.degraded_reason: str | None = None
        self.instance_id = instance_id
        self._r = client
        self._keys = keys if isinstance(keys, Keys) else Keys(keys)
        self._p = self._keys.prefix
        self._heartbeat_s = heartbeat_s
        self._ttl_s = ttl_s
        self._dirty = True
        self._running = False
        # Set on a graceful shutdown: members stay in Redis for the grace.
        self._handing_over = False
        self._beaten = False
        # Whether the last renewal of the lease went through (Upkeep.renew).
        self._lease_renewed = False
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
        # Set by the app: a leave uncounted its room (chat.presence.rooms).
        self.on_uncounted = lambda room: None
        self.last_beat_attempt = time.monotonic()
        self._register_scripts(client)
        # Joins and leaves in flight share pipelines (a Redis Cluster's
        # ShardedPresence sends its own, per node).
        self._batched = ScriptBatcher(client)

    def _register_scripts(self, client) -> None:
        self._join = client.register_script(JOIN)
        self._leave = client.register_script(LEAVE)
        self._reap = client.register_script(REAP)

    # -- keys --------------------------------------------------------------
    def _room_key(self, room: str) -> str:
        return self._keys.room_users(room)

    def _members_key(self, instance_id: str) -> str:
        return self._keys.members(instance_id)

    def _seq_key(self, room: str) -> str:
        return self._keys.room_seq(room)

    def _alive_key(self, instance_id: str) -> str:
        return self._keys.alive(instance_id)

    @property
    def _instances_key(self) -> str:
        return self._keys.instances

    # -- the presence interface ------------------------------------------
    def token_of(self, room: str, name: str) -> str | None:
        """The token of whoever holds ``name`` in ``room`` now, if anyone."""
        found = self._r.hget(self._room_key(room), name_key(name))
        return json.loads(found)["token"] if found else None

    def _encode(self, member: Member) -> str:
        return json.dumps(
            {**member.to_dict(), "key": member.key, "instance": self.instance_id}
        )

    # The join script reads a login's checks (moderation) in its one step.
    checks_in_join = True

    def _join_call(self, member: Member, list_up_to: int = 0, checks=()) -> tuple:
        """The join script's keys and arguments."""
        keys = [
            self._room_key(member.room),
            self._members_key(self.instance_id),
            self._seq_key(member.room),
            self._keys.reaped,
            *checks,
        ]
        args = [
            member.key,
            self._encode(member),
            member.token,
            member.sid,
            self._p,
            list_up_to,
            SEQ_TTL_S,
        ]
        return keys, args

    def _join_one(self, member: Member, list_up_to: int, checks=()) -> list:
        """The join script's reply: [ok, count, replaced, seq, rejoined,
        names, and with ``checks`` moderator, slow]; on the pipeline shared
        with the logins and leaves in flight (chat.cluster.batching)."""
        return self._batched(self._join, *self._join_call(member, list_up_to, checks))

    def _join_many(self, members: list[Member]) -> list[list]:
        """Join scripts' replies for ``members``, in one round trip."""
        pipe = self._r.pipeline(transaction=False)
        for member in members:
            keys, args = self._join_call(member)
            self._join(keys=keys, args=args, client=pipe)
        return pipe.execute()

    def _reap_instance(self, instance_id: str, forced: bool) -> list:
        """Remove what ``instance_id`` registered: a flat list of (room, name,
        count, seq) of every member removed. Unless ``forced`` (an instance
        cleaning up after itself), only one caller does it, and empty when
        another already has."""
        return self._reap(
            keys=[self._instances_key],
            args=[self._p, instance_id, "1" if forced else "0", SEQ_TTL_S],
        )

    def join(self, member: Member, list_up_to: int = 0, checks=()) -> JoinResult:
        """Claim the name cluster-wide; while Redis is down, among local users.

        The room's names come back with it when it has at most
        ``list_up_to`` users. ``checks``: the keys a login reads
        (chat.moderation.store.login_keys), read in the same step when
        ``checks_in_join``; a ban refuses the join (``checked`` has it).
        """
        self._joining.add(member.sid)
        try:
            reply = self._join_one(member, list_up_to, checks)
        except redis.RedisError as exc:
            return self._join_degraded(member, exc, list_up_to)
        finally:
            self._joining.discard(member.sid)
        ok, count, replaced, seq, _, *rest = reply
        if ok == -1:
            return JoinResult(False, 0, checked=(rest[0], None, None))
        if not ok:
            return JoinResult(False, int(count))
        replaced_sid = replaced.decode() if replaced else None
        self.local.pop(replaced_sid or "", None)
        self.local[member.sid] = member
        listed = None
        if int(count) <= list_up_to:
            listed = sorted((n.decode() for n in rest[0]), key=str.casefold)
        checked = None
        if checks:
            checked = (None, *(value or None for value in rest[1:3]))
        return JoinResult(True, int(count), replaced_sid, int(seq), listed, checked)

    def _join_degraded(
        self, member: Member, exc: Exception, list_up_to: int
    ) -> JoinResult:
        self.mark_degraded(exc)
        same_room = list(self.local.in_room(member.room).values())
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
        removed, count, seq, uncounted = self._batched(
            self._leave,
            [
                self._room_key(member.room),
                self._members_key(self.instance_id),
                self._seq_key(member.room),
                self._keys.rooms,
                self._keys.history(member.room),
            ],
            [member.key, member.sid, member.room, SEQ_TTL_S],
        )
        if uncounted:
            self.on_uncounted(member.room)
        return [removed, count, seq]

    def _local_names(self, room: str) -> list[str]:
        return sorted(
            (m.name for m in self.local.in_room(room).values()), key=str.casefold
        )

    def _local_count(self, room: str) -> int:
        return len(self.local.in_room(room))
