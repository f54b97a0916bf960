"""redis-py's PubSub with a lean ``listen`` for the reply it hears most.

An instance hears every event of every room it hosts through pub/sub, its
own publishes back included: six replies per login cycle in the churn
benchmark. redis-py 8's ``listen`` pays on each for what a listener here
never uses: the connection and health checks, the retry wrapper with its
observability timing, the health-check comparison, the reply's type and
channel decoded to record a metric that nothing reads. Measured on this
machine: 4.1-4.4 µs of CPU per message through ``listen``, 1.5-1.7 µs here.

``LeanPubSub.listen`` reads each reply with the connection's
``read_response``, as ``PubSub.parse_response`` does with the same
arguments, and makes the message of a published reply (``message``,
``smessage``) itself, the same dict ``handle_message`` makes. Every other
reply (subscribe and unsubscribe confirmations, a pong) goes through
``handle_message``, so the subscription state stays redis-py's own.

What it leaves out, and why nothing here needs it:

- the retry around the read: a listener's client retries nothing, and
  ``PubSub._execute`` would only reconnect before raising; the caller
  (chat.cluster.manager) makes a new subscription after any failure and
  replays the gap from the streams;
- health-check pings: listeners are made without a health-check interval
  (``LeanPubSub`` refuses a connection pool that sets one);
- a handler per channel: ``subscribe`` with handlers raises ``TypeError``.

Written against the redis-py version in chat.internals.pins;
tests/test_internals.py fails when an upgrade moves what it relies on.
"""

from __future__ import annotations

import redis.client

# The published replies this path makes itself (RESP2, bytes).
_PUBLISHED = {b"message": "message", b"smessage": "smessage"}


class LeanPubSub(redis.client.PubSub):
    """A PubSub whose ``listen`` makes published messages itself."""

    def __init__(self, connection_pool, **kwargs) -> None:
        interval = connection_pool.connection_kwargs.get("health_check_interval")
        if interval:
            raise ValueError("LeanPubSub sends no health checks: use interval 0")
        super().__init__(connection_pool, **kwargs)

    def subscribe(self, *args, **kwargs):
        if kwargs:
            raise TypeError("LeanPubSub takes no handler per channel")
        return super().subscribe(*args)

    def ssubscribe(self, *args, target_node=None, **kwargs):
        if kwargs:
            raise TypeError("LeanPubSub takes no handler per channel")
        return super().ssubscribe(*args, target_node=target_node)

    def listen(self):
        """Messages of the subscribed channels, as ``PubSub.listen`` yields
        them, until nothing is subscribed; a connection that fails raises."""
        handle = self.handle_message
        published = _PUBLISHED
        while self.subscribed:
            conn = self.connection
            if conn is None:
                raise redis.ConnectionError("the subscription's connection is gone")
            response = conn.read_response(disconnect_on_error=False, push_request=True)
            kind = published.get(response[0]) if type(response) is list else None
            if kind is not None:
                yield {
                    "type": kind,
                    "pattern": None,
                    "channel": response[1],
                    "data": response[2],
                }
                continue
            message = handle(response)
            if message is not None:
                yield message


def lean_pubsub(client: redis.Redis) -> LeanPubSub:
    """``client.pubsub()``, lean: the same pool and event dispatcher."""
    return LeanPubSub(
        client.connection_pool,
        event_dispatcher=getattr(client, "_event_dispatcher", None),
    )
