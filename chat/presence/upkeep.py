"""Keeping cluster presence true over time: the heartbeat that renews this
instance's lease and writes its users back after an outage, the sweep of
names left behind, the reaping of instances that died, and leaving the
cluster (a hand-over on a deploy, or a stop).

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

from chat.presence.member import Member

log = logging.getLogger(__name__)


class Upkeep:
    """The heartbeat, sweep, reaping and leaving of ``RedisPresence``."""

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

        The lease is renewed by a loop of its own, which waits on nothing
        but the lease's Redis: the beat's other work (sweep, rebuild,
        reaping) touches the members lists and rooms, which on a Redis
        Cluster live on other shards. A shard paused or failing over for
        longer than the TTL stalls that work, and must not let the lease
        lapse, or the other instances reap users who are still here.

        ``announce(event, room, name, count, seq)`` tells a room that a user
        of a dead instance left, or that a user wrongly reaped is back.
        """
        self._running = True
        self.beat(announce)

        def every_interval(work) -> None:
            while self._running:
                sleep(self._heartbeat_s)
                if self._running:
                    work()

        spawn(every_interval, self.renew)
        spawn(every_interval, lambda: self.beat(announce, renew=False))

    def renew(self) -> None:
        """Renew this instance's lease; never raises (its loop must outlive
        any error)."""
        try:
            self._renew()
        except redis.RedisError as exc:
            self._lease_renewed = False
            self.mark_degraded(exc)
        except Exception:
            self._lease_renewed = False
            log.exception("renewing the presence lease failed; trying again")

    def _renew(self) -> None:
        started = time.monotonic()
        was_alive = self._r.set(
            self._alive_key(self.instance_id), "1", ex=self._ttl_s, get=True
        )
        lapsed = was_alive is None and self._beaten
        if lapsed or self._stalled(started):
            # Our own lease lapsed, or renewing it was slow: whatever held us
            # up held the others' renewals up too. Reap no one until a whole
            # TTL has passed without that. (A first beat finds no lease: that
            # is a start, not a lapse.)
            self._last_error_at = time.monotonic()
        if lapsed:
            log.warning("the presence lease had lapsed; writing our users back")
        self._beaten = True
        self._last_renewed = time.monotonic()
        self._lease_renewed = True
        if was_alive is None:
            # Reaped, or Redis lost it: the next beat writes our users back.
            self._dirty = True

    def beat(self, announce, renew: bool = True) -> None:
        """Refresh the lease (unless its own loop does), rebuild if Redis
        lost us, sweep, reap the dead.

        Never raises: the loop that calls it must outlive any error.
        """
        self.last_beat_attempt = time.monotonic()
        try:
            if renew:
                self._renew()
            if self._dirty:
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
        if self._lease_renewed:
            self._mark_healthy()

    def _stalled(self, started: float) -> bool:
        """True if this renewal took long, or came long after the last one."""
        took = time.monotonic() - started
        late = started - self._last_renewed > 2 * self._heartbeat_s
        return took > self._heartbeat_s / 2 or late

    def _clear_view(self, asked: float) -> bool:
        """Whether a lease found gone (asked at ``asked``) means its instance
        is dead, rather than stalled as we were.

        The beat checks for errors before it reads the leases; a stall of
        the leases' Redis (a pause, a failover) that began after that check
        holds the read, and lets every lease lapse meanwhile, ours too. When
        it ends, the renewal loop may not have said so yet. So, after the
        read: it was quick, no error since, and our own lease renewed
        lately; else a stall may have hidden the others' renewals, and
        nobody is reaped until a whole TTL has passed without one.
        """
        now = time.monotonic()
        clear = (
            now - asked <= self._heartbeat_s / 2
            and now - self._last_error_at >= self._ttl_s
            and now - self._last_renewed <= 2 * self._heartbeat_s
        )
        if not clear:
            self._last_error_at = now
        return clear

    def _rebuild(self, announce) -> None:
        members = list(self.local.values())  # a snapshot: logins go on meanwhile
        self._reap_instance(self.instance_id, forced=True)
        for member, result in zip(members, self._join_many(members), strict=True):
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
            if other == self.instance_id:
                continue
            asked = time.monotonic()
            if self._r.exists(self._alive_key(other)):
                continue
            if not self._clear_view(asked):
                break
            flat = self._reap_instance(other, forced=False)
            found = [
                (
                    flat[i].decode(),
                    flat[i + 1].decode(),
                    int(flat[i + 2]),
                    int(flat[i + 3]),
                )
                for i in range(0, len(flat), 4)
            ]
            # An instance that left with nobody to clean up after (a planned
            # stop hands its users over) is no news; one that left users is.
            log.log(
                logging.WARNING if found else logging.INFO,
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
