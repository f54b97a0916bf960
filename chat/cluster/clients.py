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
- ``redis+cluster://[[user]:password@]host1:port1,host2:port2``, and
  ``rediss+cluster://`` for TLS (``?ssl_ca_certs=/path/ca.pem``): a Redis
  Cluster, through redis-py's ``RedisCluster``. The hosts are seeds: any one
  that answers tells the client the whole cluster, and the client follows
  slot moves and failovers from there. A cluster has no databases.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

import redis
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry
from socketio.redis_manager import parse_redis_sentinel_url

from chat.internals.redis_pool import BlockingPool, SentinelBlockingPool

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # -> TLS


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


@dataclass(frozen=True)
class ClusterURL:
    """What a ``redis+cluster://`` URL says: the seeds, and a plain
    ``redis://`` URL of the first one carrying the credentials and TLS
    options that every node's connections use."""

    seeds: list[tuple[str, int]]
    first: str


def parse_cluster_url(url: str) -> ClusterURL | None:
    """The seeds and credentials of a cluster URL; None for any other scheme.

    ValueError for a cluster URL without hosts, with a database, or with a
    parameter it does not know.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in CLUSTER_SCHEMES:
        return None
    userinfo, _, hosts = parsed.netloc.rpartition("@")
    seeds = []
    for host in filter(None, hosts.split(",")):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"a cluster seed is host:port, not {host!r}")
        seeds.append((name, int(port)))
    if not seeds:
        raise ValueError("a redis+cluster:// URL names at least one host:port")
    if parsed.path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has no databases: leave the /DB out")
    unknown = set(urllib.parse.parse_qs(parsed.query)) - {"ssl_ca_certs"}
    if unknown:
        raise ValueError(f"unknown REDIS_URL parameters: {', '.join(sorted(unknown))}")
    scheme = "rediss" if CLUSTER_SCHEMES[parsed.scheme] else "redis"
    auth = f"{userinfo}@" if userinfo else ""
    query = f"?{parsed.query}" if parsed.query else ""
    first = f"{scheme}://{auth}{seeds[0][0]}:{seeds[0][1]}/0{query}"
    return ClusterURL(seeds, first)


def node_client(url: str, host: str, port: int, **options) -> redis.Redis:
    """A plain client of one node of the cluster of ``url``, with the URL's
    credentials and TLS (a sharded pub/sub listener's connection)."""
    settings = redis.connection.parse_url(parse_cluster_url(url).first)
    settings.update(host=host, port=port, **options)
    return redis.Redis(connection_pool=redis.ConnectionPool(**settings))


def is_cluster(url: str | None) -> bool:
    """Whether ``url`` is a Redis Cluster's (its keys then carry hash tags)."""
    return bool(url) and urllib.parse.urlsplit(url).scheme in CLUSTER_SCHEMES


# Connections per client, and how long a command waits for one of them.
# redis-py's plain pool fails a command at once with "Too many connections"
# past 100 in use, which a reconnect storm reaches: thousands of logins in
# flight took an instance into degraded mode (local presence only) while
# Redis was fine. A bounded blocking pool queues them instead, and keeps
# what a cluster opens to Redis at (instances x clients x POOL_SIZE).
POOL_SIZE = 64
POOL_WAIT_S = 10.0
# redis-py 8 speaks RESP3 and then, by default, turns on maintenance
# notifications (moves announced by managed Redis services; Redis 7 answers
# the request with an error, on every new connection). While they are on,
# its pool ignores what it finds when it checks a connection for unread
# data before handing it out, so a reply left behind by a command cut off
# would be read as the next command's. Off, the check counts again.
NO_MAINT_NOTIFICATIONS = MaintNotificationsConfig(enabled=False)


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
        "maint_notifications_config": NO_MAINT_NOTIFICATIONS,
        **options,
    }
    cluster = parse_cluster_url(url)
    if cluster is not None:
        return cluster_client(cluster, settings)
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        pool = BlockingPool.from_url(url, **settings)
        return redis.Redis(connection_pool=pool)
    return sentinels_of(sentinel, timeout_s).master_for(
        sentinel.service,
        connection_pool_class=SentinelBlockingPool,
        **sentinel.node_options,
        **settings,
    )


def cluster_client(cluster: ClusterURL, settings: dict) -> ClusterClient:
    """A Redis Cluster client: each node's pool bounded as above; a command
    that meets a dead master or a moved slot asks the cluster again (its
    default retries), so a failover costs a wait, not an error.

    The first seed goes in as a URL: that is how redis-py builds every
    node's pool with ``connection_pool_class`` and the URL's credentials."""
    settings = dict(settings)
    if settings.pop("retry", None) is not None:
        # The start-up check: one try is enough.
        settings["cluster_error_retry_attempts"] = 1

    def make() -> redis.RedisCluster:
        return redis.RedisCluster(
            url=cluster.first,
            startup_nodes=[
                redis.cluster.ClusterNode(h, p) for h, p in cluster.seeds[1:]
            ],
            connection_pool_class=BlockingPool,
            **settings,
        )

    return ClusterClient(make)


class _RedisErrors:
    """Calls through to ``target``; redis-py's cluster errors that are not
    ``RedisError`` (no reachable node, a slot not covered during a
    failover) come out as ``redis.ConnectionError``: the outage every
    caller already handles."""

    def __init__(self, target) -> None:
        self._target = target

    def __getattr__(self, name):
        found = getattr(self._target, name)
        if not callable(found):
            return found

        def call(*args, **kwargs):
            try:
                result = found(*args, **kwargs)
            except redis.RedisError:
                raise
            except redis.exceptions.RedisClusterException as exc:
                raise redis.ConnectionError(str(exc)) from exc
            if isinstance(result, redis.cluster.ClusterPipeline):
                return _RedisErrors(result)
            return result

        return call


class ClusterClient(_RedisErrors):
    """A ``RedisCluster`` made on first use, and again after a failure.

    redis-py's RedisCluster asks a seed for the cluster's layout as it is
    made, so one made at start-up while the cluster is away would stop
    the instance; this one starts degraded as with any other Redis."""

    def __init__(self, make) -> None:
        self._make = make
        self._client = None
        super().__init__(None)

    @property
    def cluster(self) -> redis.RedisCluster:
        if self._client is None:
            try:
                self._client = self._make()
            except redis.RedisError:
                raise
            except redis.exceptions.RedisClusterException as exc:
                cause = exc.__cause__
                if isinstance(cause, redis.AuthenticationError):
                    raise cause from exc
                raise redis.ConnectionError(str(exc)) from exc
        return self._client

    def __getattr__(self, name):
        self._target = self.cluster
        return super().__getattr__(name)

    def register_script(self, script: str):
        """A script run by this client, made without connecting."""
        return redis.commands.core.Script(self, script)

    def get_encoder(self):
        """For ``Script``, without connecting."""
        return redis.connection.Encoder("utf-8", "strict", False)


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
