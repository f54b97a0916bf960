"""Bans and mutes, and the audit trail: in this process on one instance, in
Redis for a cluster (each entry a key with its expiry, so nothing outlives
its time and a restart of the instances keeps them)."""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import math
import time

import redis

from chat.cluster.keys import Keys
from chat.messages.entries import Muted, SlowMode
from chat.validation import name_key

# Audit entries kept (the oldest go first).
AUDIT_KEPT = 10000


def _now() -> float:
    return time.time()


def _entry(by: str, reason: str, seconds: float | None) -> dict:
    until = _now() + seconds if seconds else None
    return {"by": by, "reason": reason, "until": until}


def token_hash(token: str) -> str:
    """What is kept of a moderator's token: enough to compare, not to use."""
    return hashlib.sha256(token.encode()).hexdigest()


def until(entry: dict) -> str:
    """`` until <time>`` of a ban or mute, or nothing for one for good."""
    if not entry.get("until"):
        return ""
    return time.strftime(" until %Y-%m-%d %H:%M UTC", time.gmtime(entry["until"]))


def _key(kind: str, value: str, room: str | None = None) -> str:
    """Names are compared as logins compare them; addresses as given; a ban
    from one room (a moderator's, a kick) names the room too."""
    if room is not None:
        return f"{room}:{name_key(value)}"
    return name_key(value) if kind == "name" else value


def _kind(kind: str, room: str | None) -> str:
    return "room" if room is not None else kind


class MemoryModeration:
    """One instance without Redis: everything in this process."""

    def __init__(self) -> None:
        self._bans: dict[str, dict] = {}
        self._mutes: dict[str, dict] = {}
        self._moderators: dict[str, dict[str, str]] = {}
        self._slow: dict[str, int] = {}
        self._last_sent: dict[str, float] = {}
        self._audit: collections.deque = collections.deque(maxlen=AUDIT_KEPT)

    @staticmethod
    def _live(table: dict, key: str) -> dict | None:
        found = table.get(key)
        if found is not None and found["until"] is not None and found["until"] < _now():
            del table[key]
            return None
        return found

    def ban(
        self, kind: str, value: str, by: str, reason: str, seconds=None, room=None
    ) -> None:
        """``kind`` name (``value`` a name, compared as names are) or address
        (``value`` a client key, chat.transport.clientaddr); with ``room``,
        the name from that room only."""
        self._bans[f"{_kind(kind, room)}:{_key(kind, value, room)}"] = {
            "kind": _kind(kind, room),
            "value": value,
            "room": room,
            **_entry(by, reason, seconds),
        }

    def unban(self, kind: str, value: str, room=None) -> bool:
        key = f"{_kind(kind, room)}:{_key(kind, value, room)}"
        return self._bans.pop(key, None) is not None

    def banned(self, name: str, client: str, room: str = "") -> dict | None:
        return (
            self._live(self._bans, f"name:{name_key(name)}")
            or self._live(self._bans, f"address:{client}")
            or self._live(self._bans, f"room:{room}:{name_key(name)}")
        )

    def at_login(self, name: str, client: str, room: str, token: str) -> tuple:
        """(the ban that refuses this login or None, whether ``name`` with
        ``token`` moderates ``room``, the room's slow mode in seconds)."""
        return (
            self.banned(name, client, room),
            self.is_moderator(room, name, token),
            self.slow(room),
        )

    def add_moderator(self, room: str, name: str, token: str) -> None:
        self._moderators.setdefault(room, {})[name_key(name)] = token_hash(token)

    def remove_moderator(self, room: str, name: str) -> bool:
        return self._moderators.get(room, {}).pop(name_key(name), None) is not None

    def is_moderator(self, room: str, name: str, token: str | None = None) -> bool:
        """``name`` moderates ``room`` (and, given ``token``, is its holder)."""
        found = self._moderators.get(room, {}).get(name_key(name))
        if found is None:
            return False
        return token is None or hmac.compare_digest(found, token_hash(token))

    def set_slow(self, room: str, seconds: int) -> None:
        if seconds:
            self._slow[room] = seconds
        else:
            self._slow.pop(room, None)

    def slow(self, room: str) -> int:
        return self._slow.get(room, 0)

    def check_send(self, room: str, name: str) -> None:
        """Raise Muted or SlowMode when ``name`` may not send in ``room`` now
        (the Redis store script does the same checks)."""
        mute = self.muted(room, name)
        if mute is not None:
            raise Muted(mute)
        slow = self._slow.get(room)
        if slow:
            key, now = f"{room}\0{name_key(name)}", _now()
            last = self._last_sent.get(key, 0.0)
            if now - last < slow:
                raise SlowMode(math.ceil(slow - (now - last)))
            self._last_sent[key] = now
            if len(self._last_sent) > 10000:
                self._last_sent = {
                    k: t for k, t in self._last_sent.items() if now - t < slow
                }

    def bans(self) -> list[dict]:
        return [b for k in list(self._bans) if (b := self._live(self._bans, k))]

    def mute(self, room: str, name: str, by: str, reason: str, seconds) -> None:
        self._mutes[f"{room}\0{name_key(name)}"] = _entry(by, reason, seconds)

    def unmute(self, room: str, name: str) -> bool:
        return self._mutes.pop(f"{room}\0{name_key(name)}", None) is not None

    def muted(self, room: str, name: str) -> dict | None:
        if not self._mutes:
            return None
        return self._live(self._mutes, f"{room}\0{name_key(name)}")

    def record(self, action: dict) -> None:
        self._audit.append({"ts": _now(), **action})

    def audit(self, count: int) -> list[dict]:
        return list(self._audit)[-count:]


def judge(ban, moderator, slow, token: str) -> tuple:
    """What a login's reads say, as ``at_login`` answers: the ban (its
    stored JSON, or None), whether ``token`` is the room's moderator's (the
    stored hash, or None), and the slow mode's seconds."""
    holder = moderator is not None and hmac.compare_digest(
        moderator.decode(), token_hash(token)
    )
    return (json.loads(ban) if ban else None), holder, int(slow or 0)


class RedisModeration:
    """A cluster: one key per ban or mute, with its expiry as the key's TTL."""

    def __init__(self, client: redis.Redis, keys: Keys | str, fast=None) -> None:
        self._r = client
        # Logins read bans with the store's short timeout (STORE_TIMEOUT_S).
        self._fast = fast or client
        self._keys = keys if isinstance(keys, Keys) else Keys(keys)

    def _ban_key(self, kind: str, key: str) -> str:
        return self._keys.ban(kind, key)

    def mute_key(self, room: str, name: str) -> str:
        """The key of ``name``'s mute in ``room`` (the store script reads it)."""
        return self._keys.mute(room, name_key(name))

    def ban(
        self, kind: str, value: str, by: str, reason: str, seconds=None, room=None
    ) -> None:
        kind, key = _kind(kind, room), _key(kind, value, room)
        entry = {"kind": kind, "value": value, "room": room}
        entry.update(_entry(by, reason, seconds))
        ttl = int(seconds) if seconds else None
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self._ban_key(kind, key), json.dumps(entry), ex=ttl)
        # An index for listing; members whose key expired are dropped then.
        pipe.sadd(self._keys.bans, f"{kind}:{key}")
        pipe.execute()

    def unban(self, kind: str, value: str, room=None) -> bool:
        kind, key = _kind(kind, room), _key(kind, value, room)
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(self._ban_key(kind, key))
        pipe.srem(self._keys.bans, f"{kind}:{key}")
        return bool(pipe.execute()[0])

    def banned(self, name: str, client: str, room: str = "") -> dict | None:
        """The ban on this name or client (or name in ``room``); None also
        when Redis cannot say (an outage lets logins through rather than
        stopping the chat)."""
        try:
            found = self._fast.mget(
                self._ban_key("name", name_key(name)),
                self._ban_key("address", client),
                self._ban_key("room", f"{room}:{name_key(name)}"),
            )
        except redis.RedisError:
            return None
        found = next((f for f in found if f), None)
        return json.loads(found) if found else None

    def at_login(self, name: str, client: str, room: str, token: str) -> tuple:
        """(the ban that refuses this login or None, whether ``name`` with
        ``token`` moderates ``room``, the room's slow mode): one round trip.
        When Redis cannot say, nobody is refused, nobody moderates."""
        key = name_key(name)
        try:
            # GETs, not one MGET: a Redis Cluster's pipeline refuses MGET.
            pipe = self._fast.pipeline(transaction=False)
            *bans, moderators, slow_key = self.login_keys(name, client, room)
            for ban in bans:
                pipe.get(ban)
            pipe.hget(moderators, key)
            pipe.get(slow_key)
            *bans, moderator, slow = pipe.execute()
        except redis.RedisError:
            return None, False, 0
        return judge(next((b for b in bans if b), None), moderator, slow, token)

    def login_keys(self, name: str, client: str, room: str) -> list[str]:
        """What a login reads: the bans on the name, the address and the name
        in the room, then the room's moderators (a hash by name key) and its
        slow mode. On one Redis the join script reads them itself
        (chat.presence.scripts), in the login's one round trip."""
        key = name_key(name)
        return [
            self._ban_key("name", key),
            self._ban_key("address", client),
            self._ban_key("room", f"{room}:{key}"),
            self._moderators_key(room),
            self.slow_key(room),
        ]

    def _moderators_key(self, room: str) -> str:
        return self._keys.moderators(room)

    def add_moderator(self, room: str, name: str, token: str) -> None:
        self._r.hset(self._moderators_key(room), name_key(name), token_hash(token))

    def remove_moderator(self, room: str, name: str) -> bool:
        return bool(self._r.hdel(self._moderators_key(room), name_key(name)))

    def is_moderator(self, room: str, name: str, token: str | None = None) -> bool:
        """``name`` moderates ``room`` (and, given ``token``, is its holder)."""
        try:
            found = self._fast.hget(self._moderators_key(room), name_key(name))
        except redis.RedisError:
            return False
        if found is None:
            return False
        return token is None or hmac.compare_digest(found.decode(), token_hash(token))

    def store_keys(self, room: str, name: str) -> list[str]:
        """What the store script checks for ``name`` sending in ``room``."""
        return [
            self.mute_key(room, name),
            self.slow_key(room),
            self.sent_key(room, name),
        ]

    def slow_key(self, room: str) -> str:
        """The key of ``room``'s slow mode (seconds; the store script reads it)."""
        return self._keys.slow(room)

    def sent_key(self, room: str, name: str) -> str:
        """Set for a slow room's sender until they may send again."""
        return self._keys.sent(room, name_key(name))

    def set_slow(self, room: str, seconds: int) -> None:
        if seconds:
            self._r.set(self.slow_key(room), seconds)
        else:
            self._r.delete(self.slow_key(room))

    def slow(self, room: str) -> int:
        try:
            return int(self._fast.get(self.slow_key(room)) or 0)
        except redis.RedisError:
            return 0

    def bans(self) -> list[dict]:
        members = sorted(m.decode() for m in self._r.smembers(self._keys.bans))
        if not members:
            return []
        values = self._r.mget([self._ban_key(*m.split(":", 1)) for m in members])
        gone = [m for m, v in zip(members, values, strict=True) if v is None]
        if gone:
            self._r.srem(self._keys.bans, *gone)
        return [json.loads(v) for v in values if v is not None]

    def mute(self, room: str, name: str, by: str, reason: str, seconds) -> None:
        entry = _entry(by, reason, seconds)
        ttl = int(seconds) if seconds else None
        self._r.set(self.mute_key(room, name), json.dumps(entry), ex=ttl)

    def unmute(self, room: str, name: str) -> bool:
        return bool(self._r.delete(self.mute_key(room, name)))

    def muted(self, room: str, name: str) -> dict | None:
        """(The store script checks mutes itself; this is for listing.)"""
        found = self._r.get(self.mute_key(room, name))
        return json.loads(found) if found else None

    def record(self, action: dict) -> None:
        fields = {k: json.dumps(v) for k, v in action.items()}
        self._r.xadd(self._keys.audit, fields, maxlen=AUDIT_KEPT, approximate=True)

    def audit(self, count: int) -> list[dict]:
        rows = self._r.xrevrange(self._keys.audit, count=count)
        entries = []
        for raw_id, fields in reversed(rows):
            entry = {k.decode(): json.loads(v) for k, v in fields.items()}
            entry["ts"] = int(raw_id.decode().split("-")[0]) / 1000
            entries.append(entry)
        return entries
