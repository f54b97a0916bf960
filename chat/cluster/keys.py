"""Every Redis key the chat uses, in one place, and which of them live together.

On one Redis (or a Sentinel-managed master) the names are the historical
ones (``chat:room:lobby:users``). On a Redis Cluster each room's keys carry
the room as a hash tag (``chat:room:{lobby}:users``, ``chat:history:{lobby}``),
so a room's users, sequence, history, byte count, resend ids, mutes, slow
mode and moderators share one hash slot: every script that serves a room
touches one slot, and the room's pub/sub channel (``chat#{lobby}``) lives
on the same shard. A room name is ``[a-z0-9_-]{1,32}`` (chat.validation),
so it can never end a tag early.

The keys that are not a room's are few and small, each group in its own
slot: an instance's lease and member list (``{instance-id}``), the room
count with the per-client counters of new rooms (``{rooms}``), the bans and
their index (``{mod}``), the registry of instances with every instance's
lease (``{instances}``), and the reaped sessions.
docs/budgets.md says what each holds and how it is bounded.
"""

from __future__ import annotations


class Keys:
    """The key names for ``prefix``; ``cluster`` adds the hash tags."""

    def __init__(self, prefix: str, cluster: bool = False) -> None:
        if cluster and ("{" in prefix or "}" in prefix):
            raise ValueError(
                "REDIS_KEY_PREFIX cannot contain { or } on a Redis Cluster"
            )
        self.prefix = prefix
        self.cluster = cluster

    def _tag(self, name: str) -> str:
        return f"{{{name}}}" if self.cluster else name

    # -- a room's keys: one slot per room on a cluster ----------------------
    def room_users(self, room: str) -> str:
        return f"{self.prefix}room:{self._tag(room)}:users"

    def room_seq(self, room: str) -> str:
        return f"{self.prefix}room:{self._tag(room)}:seq"

    def history(self, room: str) -> str:
        return f"{self.prefix}history:{self._tag(room)}"

    def history_bytes(self, room: str) -> str:
        return f"{self.history(room)}:bytes"

    def client_id(self, room: str, digest: str) -> str:
        """A resend's first id (chat.messages.entries.client_id_key)."""
        if self.cluster:
            return f"{self.prefix}cid:{self._tag(room)}:{digest}"
        return f"{self.prefix}cid:{digest}"

    def unused(self, room: str) -> str:
        """A key a script is given where it needs none: a script's keys must
        all be in one slot on a cluster ('' on one Redis)."""
        return f"{self.prefix}unused:{self._tag(room)}" if self.cluster else ""

    def mute(self, room: str, name_key: str) -> str:
        return f"{self.prefix}mod:mute:{self._tag(room)}:{name_key}"

    def slow(self, room: str) -> str:
        return f"{self.prefix}mod:slow:{self._tag(room)}"

    def sent(self, room: str, name_key: str) -> str:
        return f"{self.prefix}mod:sent:{self._tag(room)}:{name_key}"

    def moderators(self, room: str) -> str:
        return f"{self.prefix}mod:moderators:{self._tag(room)}"

    def room_channel(self, channel: str, room: str) -> str:
        """The pub/sub channel of ``room``'s events."""
        return f"{channel}#{self._tag(room)}"

    def room_of_channel(self, channel: str, name: str) -> str | None:
        """The room whose channel ``name`` is; None for any other channel."""
        start = f"{channel}#"
        if not name.startswith(start):
            return None
        room = name[len(start) :]
        if self.cluster:
            return room[1:-1] if room.startswith("{") and room.endswith("}") else None
        return room

    # -- cluster-wide keys ------------------------------------------------------
    def members(self, instance_id: str) -> str:
        return f"{self.prefix}instance:{self._tag(instance_id)}:members"

    def alive(self, instance_id: str) -> str:
        """An instance's lease. On a cluster every lease shares one slot with
        the registry (``instances``): an instance that can read the others'
        leases could renew its own, so a shard that is away never makes
        one instance see another's lease missing and reap its users."""
        if self.cluster:
            return f"{self.prefix}{{instances}}:alive:{instance_id}"
        return f"{self.prefix}instance:{instance_id}:alive"

    def reaping(self, instance_id: str) -> str:
        """Held by the instance that reaps ``instance_id`` (a cluster only)."""
        return f"{self.prefix}instance:{self._tag(instance_id)}:reaping"

    @property
    def instances(self) -> str:
        return f"{self.prefix}{self._tag('instances')}"

    @property
    def reaped(self) -> str:
        return f"{self.prefix}reaped"

    @property
    def rooms(self) -> str:
        return f"{self.prefix}{self._tag('rooms')}"

    def opened(self, client: str) -> str:
        """How many rooms ``client`` opened this hour; beside the room count."""
        if self.cluster:
            return f"{self.prefix}{{rooms}}:opened:{client}"
        return f"{self.prefix}opened:{client}"

    def _moderation(self) -> str:
        """Where the bans live: one slot on a cluster (``bans`` lists them)."""
        return f"{self.prefix}mod:{{mod}}:" if self.cluster else f"{self.prefix}mod:"

    def ban(self, kind: str, key: str) -> str:
        return f"{self._moderation()}ban:{kind}:{key}"

    @property
    def bans(self) -> str:
        return f"{self._moderation()}bans"

    @property
    def audit(self) -> str:
        return f"{self.prefix}mod:audit"
