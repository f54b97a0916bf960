"""Talking to a Redis Cluster shard by shard: sharded pub/sub, and pipelines
of scripts whose keys live on different shards.

redis-py's ``RedisCluster`` routes one command at a time; its cluster
pipeline refuses scripts, and its sharded pub/sub polls every node in
turn. The chat needs both: a login's and a heartbeat's scripts go to
several shards in one round trip, and the listener blocks until any shard
has a message. On gevent the natural shape is one greenlet per shard.
"""

from __future__ import annotations

import contextlib
import logging

import gevent
import gevent.queue
import redis

from chat.internals.pubsub import LeanPubSub, lean_pubsub

log = logging.getLogger(__name__)

# What tells us the cluster's layout changed under a command.
TOPOLOGY_ERRORS = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.ConnectionError,
    redis.TimeoutError,
)


def node_of(cluster, key: str):
    """The master that serves ``key``'s slot now, as the client knows it."""
    return cluster.get_node_from_key(key)


def refresh(cluster) -> None:
    """Ask the cluster for its layout again (after a MOVED or a dead node)."""
    try:
        cluster.nodes_manager.initialize()
    except Exception as exc:  # noqa: BLE001 - the next command will say
        log.warning("cannot refresh the Redis Cluster layout: %s", exc)


class NodePipelines:
    """Commands grouped by the master that serves their key: one pipeline per
    master, all sent at once, the replies in the order of the calls.

    Scripts go on a node's own pipeline, which loads them where a node lacks
    them (a promoted replica, a restarted master). A moved slot or a dead
    node refreshes the layout and raises: the caller's outage path runs,
    as on one Redis.
    """

    def __init__(self, cluster) -> None:
        self._cluster = cluster
        self._pipes: dict[str, object] = {}
        self._order: list[tuple[str, int]] = []

    def _pipe(self, key: str):
        node = node_of(self._cluster, key)
        pipe = self._pipes.get(node.name)
        if pipe is None:
            pipe = self._pipes[node.name] = node.redis_connection.pipeline(
                transaction=False
            )
        self._order.append((node.name, len(pipe.command_stack)))
        return pipe

    def script(self, script, keys: list[str], args: list) -> None:
        script(keys=keys, args=args, client=self._pipe(keys[0]))

    def command(self, key: str, name: str, *args, **kwargs) -> None:
        getattr(self._pipe(key), name)(key, *args, **kwargs)

    def __len__(self) -> int:
        return len(self._order)

    def execute(self) -> list:
        if not self._order:
            return []
        names = list(self._pipes)
        if len(names) == 1:
            # One master (a room's publishes, most batches): no greenlet.
            outcomes = [_outcome(self._pipes[names[0]].execute)]
        else:
            jobs = [gevent.spawn(_outcome, self._pipes[name].execute) for name in names]
            gevent.joinall(jobs)
            outcomes = [job.value for job in jobs]
        replies = {}
        for name, (failed, value) in zip(names, outcomes, strict=True):
            if failed:
                if isinstance(value, TOPOLOGY_ERRORS):
                    refresh(self._cluster)
                raise value
            replies[name] = value
        return [replies[name][index] for name, index in self._order]


def _outcome(call) -> tuple[bool, object]:
    """(failed, the value or the exception): a failure is the caller's to
    raise, not the hub's to print."""
    try:
        return False, call()
    except Exception as exc:  # noqa: BLE001 - raised by NodePipelines.execute
        return True, exc


class ShardedPubSub:
    """``SSUBSCRIBE`` on a Redis Cluster: each channel on the master that owns
    its slot, one connection and one reading greenlet per such master.

    The interface is the part of redis-py's ``PubSub`` the manager uses
    (``subscribe``, ``unsubscribe``, ``listen``, ``close``), and messages
    come out as a plain ``PubSub``'s do (``message``, ``subscribe``), so the
    manager reads one Redis and a cluster alike.

    Any change of layout under a subscription ends ``listen`` with an error:
    a shard's connection lost, or a ``sunsubscribe`` the chat did not ask
    for (Redis sends one when a channel's slot moves to another master).
    The manager then subscribes everything again on the new layout and
    replays what the streams hold, as after a restart of one Redis.
    """

    def __init__(self, cluster, connect) -> None:
        """``connect(host, port)``: a plain client of one master."""
        self._cluster = cluster
        self._connect = connect
        self._pubsubs: dict[str, LeanPubSub] = {}
        self._readers: dict[str, gevent.Greenlet] = {}
        self._node_of: dict[str, str] = {}  # channel -> master's name
        # Unsubscribed by the chat, the confirmation not in yet.
        self._leaving: set[str] = set()
        self._inbox: gevent.queue.Queue = gevent.queue.Queue()

    def _pubsub(self, node) -> LeanPubSub:
        found = self._pubsubs.get(node.name)
        if found is None:
            client = self._connect(node.host, node.port)
            found = self._pubsubs[node.name] = lean_pubsub(client)
        return found

    def subscribe(self, *channels: str) -> None:
        for channel in channels:
            node = node_of(self._cluster, channel)
            self._leaving.discard(channel)
            self._pubsub(node).ssubscribe(channel)
            self._node_of[channel] = node.name
            self._read(node.name)

    def unsubscribe(self, *channels: str) -> None:
        for channel in channels:
            name = self._node_of.pop(channel, None)
            if name is not None and name in self._pubsubs:
                self._leaving.add(channel)
                self._pubsubs[name].sunsubscribe(channel)

    def _read(self, name: str) -> None:
        reader = self._readers.get(name)
        if reader is None or reader.dead:
            self._readers[name] = gevent.spawn(self._reader, name)

    def _reader(self, name: str) -> None:
        pubsub = self._pubsubs[name]
        try:
            for message in pubsub.listen():
                self._inbox.put(message)
        except Exception as exc:  # noqa: BLE001 - handed to listen()
            self._inbox.put(exc)

    def listen(self):
        while True:
            item = self._inbox.get()
            if isinstance(item, Exception):
                raise item
            kind = item["type"]
            if kind == "smessage":
                yield {**item, "type": "message"}
            elif kind == "ssubscribe":
                yield {**item, "type": "subscribe"}
            elif kind == "sunsubscribe":
                channel = item["channel"]
                channel = channel.decode() if isinstance(channel, bytes) else channel
                if channel in self._leaving:
                    self._leaving.discard(channel)
                elif channel in self._node_of:
                    raise redis.ConnectionError(
                        f"Redis Cluster moved the slot of {channel!r}"
                    )

    def close(self) -> None:
        for reader in self._readers.values():
            reader.kill(block=False)
        for pubsub in self._pubsubs.values():
            with contextlib.suppress(Exception):  # a dead connection
                pubsub.close()
        self._readers.clear()
        self._pubsubs.clear()
