"""Bans and mutes, and the audit trail: in this process on one instance, in
Redis for a cluster (each entry a key with its expiry, so nothing outlives
its time and a restart of the instances keeps them)."""

from __future__ import annotations

import collections
import json
import time

import redis

from chat.validation import name_key

# Audit entries kept (the oldest go first).
AUDIT_KEPT = 10000


def _now() -> float:
    return time.time()


def _entry(by: str, reason: str, seconds: float | None) -> dict:
    until = _now() + seconds if seconds else None
    return {"by": by, "reason": reason, "until": until}


def until(entry: dict) -> str:
    """`` until <time>`` of a ban or mute, or nothing for one for good."""
    if not entry.get("until"):
        return ""
    return time.strftime(" until %Y-%m-%d %H:%M UTC", time.gmtime(entry["until"]))


def _key(kind: str, value: str) -> str:
    """Names are compared as logins compare them; addresses as given."""
    return name_key(value) if kind == "name" else value


class MemoryModeration:
    """One instance without Redis: everything in this process."""

    def __init__(self) -> None:
        self._bans: dict[str, dict] = {}
        self._mutes: dict[str, dict] = {}
        self._audit: collections.deque = collections.deque(maxlen=AUDIT_KEPT)

    @staticmethod
    def _live(table: dict, key: str) -> dict | None:
        found = table.get(key)
        if found is not None and found["until"] is not None and found["until"] < _now():
            del table[key]
            return None
        return found

    def ban(self, kind: str, value: str, by: str, reason: str, seconds=None) -> None:
        """``kind`` name (``value`` a name, compared as names are) or address
        (``value`` a client key, chat.transport.clientaddr)."""
        self._bans[f"{kind}:{_key(kind, value)}"] = {
            "kind": kind,
            "value": value,
            **_entry(by, reason, seconds),
        }

    def unban(self, kind: str, value: str) -> bool:
        return self._bans.pop(f"{kind}:{_key(kind, value)}", None) is not None

    def banned(self, name: str, client: str) -> dict | None:
        return self._live(self._bans, f"name:{name_key(name)}") or self._live(
            self._bans, f"address:{client}"
        )

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


class RedisModeration:
    """A cluster: one key per ban or mute, with its expiry as the key's TTL."""

    def __init__(self, client: redis.Redis, prefix: str, fast=None) -> None:
        self._r = client
        # Logins read bans with the store's short timeout (STORE_TIMEOUT_S).
        self._fast = fast or client
        self._p = prefix

    def _ban_key(self, kind: str, key: str) -> str:
        return f"{self._p}mod:ban:{kind}:{key}"

    def mute_key(self, room: str, name: str) -> str:
        """The key of ``name``'s mute in ``room`` (the store script reads it)."""
        return f"{self._p}mod:mute:{room}:{name_key(name)}"

    def ban(self, kind: str, value: str, by: str, reason: str, seconds=None) -> None:
        key = _key(kind, value)
        entry = {"kind": kind, "value": value, **_entry(by, reason, seconds)}
        ttl = int(seconds) if seconds else None
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self._ban_key(kind, key), json.dumps(entry), ex=ttl)
        # An index for listing; members whose key expired are dropped then.
        pipe.sadd(f"{self._p}mod:bans", f"{kind}:{key}")
        pipe.execute()

    def unban(self, kind: str, value: str) -> bool:
        key = _key(kind, value)
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(self._ban_key(kind, key))
        pipe.srem(f"{self._p}mod:bans", f"{kind}:{key}")
        return bool(pipe.execute()[0])

    def banned(self, name: str, client: str) -> dict | None:
        """The ban on this name or client; None also when Redis cannot say
        (an outage lets logins through rather than stopping the chat)."""
        try:
            by_name, by_address = self._fast.mget(
                self._ban_key("name", name_key(name)),
                self._ban_key("address", client),
            )
        except redis.RedisError:
            return None
        found = by_name or by_address
        return json.loads(found) if found else None

    def bans(self) -> list[dict]:
        members = sorted(m.decode() for m in self._r.smembers(f"{self._p}mod:bans"))
        if not members:
            return []
        values = self._r.mget([self._ban_key(*m.split(":", 1)) for m in members])
        gone = [m for m, v in zip(members, values, strict=True) if v is None]
        if gone:
            self._r.srem(f"{self._p}mod:bans", *gone)
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
        self._r.xadd(f"{self._p}mod:audit", fields, maxlen=AUDIT_KEPT, approximate=True)

    def audit(self, count: int) -> list[dict]:
        rows = self._r.xrevrange(f"{self._p}mod:audit", count=count)
        entries = []
        for raw_id, fields in reversed(rows):
            entry = {k.decode(): json.loads(v) for k, v in fields.items()}
            entry["ts"] = int(raw_id.decode().split("-")[0]) / 1000
            entries.append(entry)
        return entries
