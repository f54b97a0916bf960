"""The Redis side of the cluster: clients, the message queue, start-up check.

python-socketio's RedisManager backs off up to 60 s after Redis goes away and
redis-py waits forever on a hung socket; both are wrong for a chat, so the
manager here retries within ``MAX_RETRY_S`` and every client has timeouts.
"""

from __future__ import annotations

import logging
import time

import redis
import socketio

log = logging.getLogger(__name__)

MAX_RETRY_S = 2.0


def redis_client(url: str, timeout_s: float) -> redis.Redis:
    """A client for commands: bounded waits so a hung Redis never blocks a user."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
    )


def check_redis(url: str, timeout_s: float = 3.0) -> str | None:
    """Ping Redis once; a sentence saying what is wrong, or None when it answers."""
    try:
        redis_client(url, timeout_s).ping()
    except redis.AuthenticationError as exc:
        return f"Redis refused the credentials in REDIS_URL ({exc})"
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            return f"Redis refused the credentials in REDIS_URL ({exc})"
        return f"Redis answered with an error ({exc})"
    except (redis.RedisError, OSError, ValueError) as exc:
        return f"Redis at REDIS_URL is unreachable ({exc})"
    return None


def require_redis(url: str) -> None:
    """Stop the process with one clear line when Redis cannot be used at start.

    Exit code 3 is gunicorn's "worker failed to boot": the master stops too,
    instead of restarting a worker that cannot work, and prints no traceback.
    """
    problem = check_redis(url)
    if problem:
        log.error("cannot start: %s", problem)
        raise SystemExit(3)


class ChatRedisManager(socketio.RedisManager):
    """RedisManager that reconnects quickly and says whether it is listening.

    The listener gets its own connection without a read timeout: pub/sub waits
    for messages indefinitely, and a read timeout there would drop it.
    """

    def __init__(
        self, url: str, channel: str, timeout_s: float, on_publish_error=None
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
        self.on_back = lambda: None

    def _redis_connect(self) -> None:
        super()._redis_connect()
        options = {"socket_connect_timeout": self._timeout_s}
        if not self.redis_url.startswith("unix:"):
            # TCP keepalive notices a Redis host that vanished without a FIN.
            options["socket_keepalive"] = True
        listener = redis.Redis.from_url(self.redis_url, **options)
        self.pubsub = listener.pubsub(ignore_subscribe_messages=True)

    def _publish(self, data):
        result = super()._publish(data)
        if result is None:
            self._on_publish_error()
        return result

    def _redis_listen_with_retries(self):
        failing = False
        while True:
            try:
                self._redis_connect()
                self.pubsub.subscribe(self.channel)
                self.listening = True
                if failing:
                    log.warning("Subscribed to Redis again")
                    self.on_back()
                failing = False
                yield from self.pubsub.listen()
            except Exception as exc:
                if not failing:
                    log.error(
                        "No Redis subscription, retrying every %.0f s: %s",
                        MAX_RETRY_S,
                        exc,
                    )
                failing = True
                self.listening = False
                self.on_lost(exc)
                time.sleep(MAX_RETRY_S)
