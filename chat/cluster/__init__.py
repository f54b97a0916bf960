"""Joining instances through Redis: ``clients`` (a Redis client for every
URL form: plain, TLS, Sentinel, Redis Cluster), ``keys`` (every key and
channel name, with hash tags on a cluster), ``manager`` (python-socketio's
Redis manager: the message queue), ``channels`` (a room's events on the
room's own channel, heard only where the room has members), ``shards``
(sharded pub/sub and pipelines across a cluster's masters), ``batching``
(concurrent scripts sent to Redis on one pipeline), ``wire`` (commands in
one write on a pooled connection, without redis-py's pipeline object)."""
