"""Redis clients from REDIS_URL, with or without Sentinel, and the start-up check.

Every part of the app that talks to Redis (the message queue, presence,
history, /healthz and the start-up check) gets its client here, so one URL
works for all of them:

- ``redis://[[user]:password@]host:port/db``, ``rediss://`` (TLS; a private
  CA in ``?ssl_ca_certs=/path/ca.pem``) and
  ``unix:///path?password=...``: redis-py's ``from_url``.
- ``redis+sentinel://[[user]:password@]host1:port1,host2:port2/DB/SERVICE``,
  the form python-socketio's RedisManager parses: the password is the Redis
  nodes' one. The sentinels' own credentials, which that form has no place
  for, go in the query: ``?sentinel_password=...`` (and
  ``sentinel_username=...``). Clients come from redis-py's
  ``Sentinel.master_for``, which asks the sentinels for the master on every
  new connection, so a failover is followed rather than an address pinned.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

import redis
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry
from socketio.redis_manager import parse_redis_sentinel_url

SENTINEL_SCHEME = "redis+sentinel"


def quick_retry(retries: int = 0) -> Retry:
    """For the start-up check and the sentinels: an answer now, not after
    redis-py's default retries with backoff (seconds for a refused
    connection). The app's own clients keep redis-py's default: with one
    immediate retry instead, `make chaos` lost acknowledged messages across
    Redis restarts."""
    return Retry(NoBackoff(), retries)


@dataclass(frozen=True)
class SentinelURL:
    """What a ``redis+sentinel://`` URL says."""

    sentinels: list[tuple[str, int]]
    service: str
    node_options: dict = field(default_factory=dict)  # db, username, password
    sentinel_options: dict = field(default_factory=dict)  # username, password


def parse_sentinel_url(url: str) -> SentinelURL | None:
    """The Sentinel settings of ``url``; None for any other scheme.

    ValueError when it is a Sentinel URL without a service name or with
    something that cannot be parsed.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != SENTINEL_SCHEME:
        return None
    base = urllib.parse.urlunsplit(parsed._replace(query=""))
    sentinels, service, node_options = parse_redis_sentinel_url(base)
    if not service:
        raise ValueError("a redis+sentinel:// URL names its service: .../DB/SERVICE")
    query = urllib.parse.parse_qs(parsed.query)
    unknown = set(query) - {"sentinel_password", "sentinel_username"}
    if unknown:
        raise ValueError(f"unknown REDIS_URL parameters: {', '.join(sorted(unknown))}")
    sentinel_options = {
        key.removeprefix("sentinel_"): values[-1] for key, values in query.items()
    }
    node_options = {
        key: urllib.parse.unquote(value) if isinstance(value, str) else value
        for key, value in node_options.items()
    }
    return SentinelURL(sentinels, service, node_options, sentinel_options)


# Connections per client, and how long a command waits for one of them.
# redis-py's plain pool fails a command at once with "Too many connections"
# past 100 in use, which a reconnect storm reaches: thousands of logins in
# flight took an instance into degraded mode (local presence only) while
# Redis was fine. A bounded blocking pool queues them instead, and keeps
# what a cluster opens to Redis at (instances x clients x POOL_SIZE).
POOL_SIZE = 64
POOL_WAIT_S = 10.0


class SentinelBlockingConnectionPool(
    redis.sentinel.SentinelConnectionPool, redis.BlockingConnectionPool
):
    """Sentinel's pool (each new connection asks for the master) with
    BlockingConnectionPool's bound: a command waits for a free connection."""


def redis_client(url: str, timeout_s: float | None, **options) -> redis.Redis:
    """A client for ``url``: bounded waits, unless ``timeout_s`` is None (a
    pub/sub listener waits for messages indefinitely); ``options`` go to
    every connection to the Redis node (never to the sentinels).

    At most ``POOL_SIZE`` connections; past that a command waits up to
    ``POOL_WAIT_S`` for one (then ConnectionError, like an outage)."""
    settings = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s or 5.0,
        "max_connections": POOL_SIZE,
        "timeout": POOL_WAIT_S,
        **options,
    }
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        pool = redis.BlockingConnectionPool.from_url(url, **settings)
        return redis.Redis(connection_pool=pool)
    return sentinels_of(sentinel, timeout_s).master_for(
        sentinel.service,
        connection_pool_class=SentinelBlockingConnectionPool,
        **sentinel.node_options,
        **settings,
    )


def sentinels_of(
    sentinel: SentinelURL, timeout_s: float | None
) -> redis.sentinel.Sentinel:
    """The sentinels of ``sentinel``, with their own credentials only."""
    wait = timeout_s or 5.0
    return redis.sentinel.Sentinel(
        sentinel.sentinels,
        sentinel_kwargs={
            "socket_timeout": wait,
            "socket_connect_timeout": wait,
            "retry": quick_retry(),
            **sentinel.sentinel_options,
        },
    )


def check_sentinels(sentinel: SentinelURL, timeout_s: float) -> str | None:
    """Ask each sentinel for the service's master; what is wrong, or None."""
    unreachable = []
    for host, port in sentinel.sentinels:
        client = redis.Redis(
            host=host,
            port=port,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=quick_retry(),
            **sentinel.sentinel_options,
        )
        try:
            master = client.sentinel_get_master_addr_by_name(sentinel.service)
        except (redis.AuthenticationError, redis.ResponseError) as exc:
            if _refused(exc):
                return (
                    f"the sentinel at {host}:{port} refused the credentials "
                    f"(sentinel_password in REDIS_URL) ({exc})"
                )
            return f"the sentinel at {host}:{port} answered with an error ({exc})"
        except (redis.RedisError, OSError) as exc:
            unreachable.append(f"{host}:{port}: {exc}")
            continue
        finally:
            client.close()
        if master is None:
            return (
                f"the sentinel at {host}:{port} knows no master named "
                f"{sentinel.service!r}"
            )
        return None
    return f"every sentinel in REDIS_URL is unreachable ({'; '.join(unreachable)})"


def _refused(exc: Exception) -> bool:
    text = str(exc)
    return isinstance(exc, redis.AuthenticationError) or any(
        word in text for word in ("NOAUTH", "WRONGPASS", "invalid password")
    )


def check_redis(url: str, timeout_s: float = 3.0) -> str | None:
    """Ping Redis once; a sentence saying what is wrong, or None when it answers.

    "unreachable" in the sentence means it may come back by itself.
    """
    try:
        sentinel = parse_sentinel_url(url)
        if sentinel is not None:
            problem = check_sentinels(sentinel, timeout_s)
            if problem is not None:
                return problem
        redis_client(url, timeout_s, retry=quick_retry()).ping()
    except ValueError as exc:
        return f"REDIS_URL cannot be used ({exc or 'malformed URL'})"
    except (redis.AuthenticationError, redis.ResponseError) as exc:
        if _refused(exc):
            return f"Redis refused the credentials in REDIS_URL ({exc})"
        return f"Redis answered with an error ({exc})"
    except (redis.RedisError, OSError) as exc:
        if "certificate verify failed" in str(exc).lower():
            # Will not mend by itself: ssl_ca_certs in REDIS_URL is wrong.
            return f"Redis's TLS certificate was not accepted ({exc})"
        return f"Redis at REDIS_URL is unreachable ({exc})"
    return None
