"""The message queue between instances: python-socketio's Redis manager,
reconnecting quickly, publishing without blocking, and the start-up check.

python-socketio's RedisManager backs off up to 60 s after Redis goes away and
redis-py waits forever on a hung socket; both are wrong for a chat, so the
manager here retries within ``MAX_RETRY_S`` and every client has timeouts.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import time

import gevent
import socketio

from chat.cluster.channels import RoomChannels
from chat.cluster.clients import check_redis, is_cluster, node_client, redis_client
from chat.cluster.keys import Keys
from chat.cluster.shards import NodePipelines, ShardedPubSub, refresh
from chat.cluster.wire import send_all
from chat.internals.emit import FastEmitManager
from chat.internals.pubsub import lean_pubsub

log = logging.getLogger(__name__)

MAX_RETRY_S = 1.0
FIRST_RETRY_S = 0.05
PUBLISH_BATCH = 100
# A callback names the instance it is for in host_id: never dropped as ours.
_CALLBACK = b'{"method":"callback"'


def require_redis(url: str) -> None:
    """Stop with one clear line when REDIS_URL can never work; else start.

    Refused credentials or a malformed URL will not mend themselves: exit
    code 3 is gunicorn's "worker failed to boot", so the master stops too,
    with no traceback. An unreachable Redis may come back: the instance
    starts degraded and serves its own users, so a restart during an outage
    does not take the whole cluster down.
    """
    problem = check_redis(url)
    if problem is None:
        return
    if "unreachable" in problem:
        log.warning("starting degraded: %s", problem)
        return
    log.error("cannot start: %s", problem)
    raise SystemExit(3)


class ChatRedisManager(RoomChannels, socketio.RedisManager, FastEmitManager):
    """RedisManager that reconnects quickly and says whether it is listening.

    A room's events travel on the room's own channel, heard only by the
    instances that host one of its members (``RoomChannels``).

    What this instance delivers of each emit, and to whom, is ``fanout``'s
    decision (chat.messages.fanout). Local deliveries (python-socketio's
    ``Manager.emit``, below the pub/sub layer) take ``FastEmitManager``'s
    loop.

    The listener gets its own connection without a read timeout: pub/sub waits
    for messages indefinitely, and a read timeout there would drop it.
    """

    def __init__(
        self,
        url: str,
        channel: str,
        timeout_s: float,
        fanout,
        on_publish_error=None,
        publish_queue_max: int = 10000,
        room_linger_s: float = 10.0,
        keys: Keys | None = None,
    ) -> None:
        super().__init__(
            url,
            channel=channel,
            redis_options={
                "socket_timeout": timeout_s,
                "socket_connect_timeout": timeout_s,
            },
        )
        self._timeout_s = timeout_s
        self._on_publish_error = on_publish_error or (lambda: None)
        self.listening = False
        # Set by the app: what else must know that Redis went away or came back.
        self.on_lost = lambda exc: None
        self.on_back = lambda gap_started_ms: None
        self.fanout = fanout
        self._outgoing: collections.deque = collections.deque()
        self._publish_queue_max = publish_queue_max
        self._publisher = None
        # On a Redis Cluster every channel is sharded (SPUBLISH/SSUBSCRIBE):
        # a room's events cross only the shard that owns the room's slot.
        # The main channel (events for one session, whose instance nobody
        # knows) is sharded too: one shard carries it, rather than every
        # node carrying every PUBLISH as the cluster bus does.
        self.sharded = is_cluster(url)
        self.setup_room_channels(room_linger_s, keys or Keys("", self.sharded))

    def _handle_emit(self, message):
        """Every delivery passes here: this instance's own emits and those of
        other instances from pub/sub. A room not hosted here keeps no state
        (a message on the main channel, from another release, for any
        room)."""
        room = message.get("room")
        if isinstance(room, str) and self.hosts(room):
            message = self.fanout.heard(room, message)
            if message is None:
                return None
        return super()._handle_emit(message)

    def _redis_connect(self) -> None:
        """Clients from chat.cluster.clients rather than python-socketio's own, so
        that a Sentinel URL's sentinel password is used and a failover is
        followed (each new connection asks the sentinels for the master)."""
        self.redis = redis_client(self.redis_url, self._timeout_s)
        # RESP2 on the listener: with RESP3 (redis-py 8's default) and
        # hiredis 3.3.0 every push reply, i.e. every message heard, leaves
        # one Python list alive for good (redis/hiredis-py#235, fix not
        # released; redis/redis-py#4339). Pub/sub needs nothing of RESP3.
        options = {"socket_connect_timeout": self._timeout_s, "protocol": 2}
        if not self.redis_url.startswith("unix:"):
            # TCP keepalive notices a Redis host that vanished without a FIN.
            options["socket_keepalive"] = True
        old = getattr(self, "pubsub", None)
        if old is not None:
            # A replay that failed leaves its subscription open: closed
            # here, not at garbage collection.
            with contextlib.suppress(Exception):
                old.close()
        if self.sharded:
            # The layout as it is now: a failover or a resharding is why
            # the listener is here again.
            refresh(self.redis.cluster)
            self.pubsub = ShardedPubSub(
                self.redis,
                lambda host, port: node_client(
                    self.redis_url, host, port, socket_timeout=None, **options
                ),
            )
        else:
            listener = redis_client(self.redis_url, None, **options)
            # Subscribe confirmations are kept: a login waits for its room's.
            self.pubsub = lean_pubsub(listener)
        self.connected = True

    def emit(
        self,
        event,
        data,
        namespace=None,
        room=None,
        skip_sid=None,
        callback=None,
        to=None,
        **kwargs,
    ):
        """python-socketio's ``PubSubManager.emit`` for an emit without a
        callback, without its walk through the payload looking for bytes.

        The chat's events are text: the local packets are ``TextPacket``s
        (chat.internals.socketio_server), and the message is encoded to JSON
        here, by ``_publish``, so a payload that cannot be (bytes among
        them) raises in the emitting handler and nothing is sent. The
        message is the dict python-socketio makes, ``host_id`` last
        (``_own_tail``); tests/test_internals.py compares them.
        """
        if callback is not None or kwargs.get("ignore_queue"):
            return super().emit(
                event,
                data,
                namespace=namespace,
                room=room,
                skip_sid=skip_sid,
                callback=callback,
                to=to,
                **kwargs,
            )
        message = {
            "method": "emit",
            "event": event,
            "data": list(data) if isinstance(data, tuple) else [data],
            "binary": False,
            "namespace": namespace or "/",
            "room": to or room,
            "skip_sid": skip_sid,
            "callback": None,
            "host_id": self.host_id,
        }
        self._handle_emit(message)  # this instance's members
        self._publish(message)  # the other instances'
        return None

    def _publish(self, data):
        """Queue ``data`` for the other instances; never wait on Redis here.

        python-socketio publishes from the emitting greenlet, so a hung Redis
        would stall the user whose event caused the emit (two tries of
        REDIS_TIMEOUT_S each). One publisher greenlet sends the queue in
        order and retries while Redis is away; past PUBLISH_QUEUE_MAX the
        oldest event is dropped and counted (messages are in the streams,
        where a resubscribing instance finds them).

        The message is encoded here, in the emitting greenlet: one that
        cannot be raises to its emitter rather than failing the publisher's
        batch again and again.
        """
        entry = (self.channel_for(data), self.json.dumps(data))
        if len(self._outgoing) >= self._publish_queue_max:
            self._outgoing.popleft()
            self._on_publish_error()
        self._outgoing.append(entry)
        if self._publisher is None:
            self._publisher = gevent.spawn(self._publish_queued)

    def wait_published(self, timeout_s: float) -> bool:
        """Wait until what was queued is published (a shell command, about
        to exit); False if Redis took longer than ``timeout_s``. A shell
        command never listens, so its publishing client is made here."""
        if getattr(self, "redis", None) is None:
            self.redis = redis_client(self.redis_url, self._timeout_s)
        publisher = self._publisher
        if publisher is not None:
            publisher.join(timeout_s)
        return not self._outgoing

    def _publish_queued(self) -> None:
        """Publish the queue in order, up to PUBLISH_BATCH per round trip.

        One publish at a time would cap an instance at one message per Redis
        round trip. A batch that fails is sent again whole: receivers drop a
        message id they already delivered.
        """
        attempt = 0
        try:
            while self._outgoing:
                batch = list(itertools.islice(self._outgoing, PUBLISH_BATCH))
                try:
                    if self.sharded:
                        # One plain pipeline per master, rather than
                        # redis-py's cluster pipeline: cheaper per message.
                        pipe = NodePipelines(self.redis.cluster)
                        for channel, payload in batch:
                            pipe.command(channel, "spublish", payload)
                        pipe.execute()
                    else:
                        replies = send_all(
                            self.redis,
                            [
                                ("PUBLISH", channel, payload)
                                for channel, payload in batch
                            ],
                        )
                        # An error reply (a replica after a failover, a lost
                        # auth) fails the batch, as a pipeline's ``execute``.
                        for reply in replies:
                            if isinstance(reply, Exception):
                                raise reply
                except Exception as exc:
                    if attempt == 0:
                        log.error("Cannot publish to Redis, retrying: %s", exc)
                        self._on_publish_error()
                    gevent.sleep(min(MAX_RETRY_S, FIRST_RETRY_S * 4**attempt))
                    attempt += 1
                    continue
                attempt = 0
                for _ in batch:
                    self._outgoing.popleft()
        finally:
            self._publisher = None

    def _listen(self):
        """Messages of the main channel and of every subscribed room's,
        but this instance's own (``_own_tail``)."""
        own = self._own_tail()
        for message in self._redis_listen_with_retries():
            kind = message["type"]
            if kind == "message":
                data = message["data"]
                if (
                    isinstance(data, bytes)
                    and data.endswith(own)
                    and not data.startswith(_CALLBACK)
                ):
                    continue
                yield data
            elif kind == "subscribe":
                self._note_subscribed(message["channel"])

    def _own_tail(self) -> bytes:
        """How this instance's own publishes end.

        Every instance hears its own publishes back on the channels it is
        subscribed to, and python-socketio decodes each one only to drop it
        for its ``host_id`` (all but a callback, which names the instance it
        is for). ``emit`` puts ``host_id`` last and the codec writes compact
        JSON, so the raw message ends with this: it is dropped undecoded.
        A message that ends otherwise is decoded and judged as before.
        """
        return ("," + self.json.dumps({"host_id": self.host_id})[1:]).encode()

    def _redis_listen_with_retries(self):
        """Listen; after a failure resubscribe at once, then back off to 1 s.

        Anything published while this instance was not subscribed is in the
        streams; ``on_back`` replays it before live delivery goes on. A
        replay that fails (a Redis loading its AOF takes SUBSCRIBE, not
        XRANGE) keeps the gap open: subscribe and replay again, from the
        same moment.
        """
        failing = False
        retry_s = FIRST_RETRY_S
        gap_started_ms = 0
        while True:
            try:
                self._redis_connect()
                # Whatever was published while not subscribed is unknown here.
                self.fanout.gap()
                self._resubscribe()
                self.listening = True
                if failing:
                    log.warning("Subscribed to Redis again")
                    self.on_back(gap_started_ms)
                failing = False
                retry_s = FIRST_RETRY_S
                yield from self.pubsub.listen()
            except Exception as exc:
                if not failing:
                    gap_started_ms = int(time.time() * 1000)
                    log.error(
                        "No Redis subscription, retrying every %.0f s: %s",
                        MAX_RETRY_S,
                        exc,
                    )
                elif self.listening:
                    log.warning("Cannot replay from the streams yet: %s", exc)
                failing = True
                self.listening = False
                self.fanout.gap()
                self.on_lost(exc)
                time.sleep(retry_s)
                retry_s = min(MAX_RETRY_S, retry_s * 4)
