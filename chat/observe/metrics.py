"""Prometheus metrics of one instance; counts and timings, never user content."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

SOCKETS = Gauge("chat_connected_sockets", "socket.io connections open on this instance")
USERS = Gauge("chat_logged_in_users", "logged-in users on this instance")
CONNECTIONS = Gauge(
    "chat_open_connections", "TCP connections open (one handler greenlet each)"
)
SESSIONS = Gauge("chat_engineio_sessions", "engine.io sessions open")
FLUSHERS = Gauge(
    "chat_websocket_flushers",
    "websockets whose client is behind: a backlog and one flusher greenlet each",
)
WORKERS = Gauge(
    "chat_worker_greenlets",
    "reused greenlets for readers and flushers (chat.transport.workers): "
    "idle (waiting for a job, at most 64) and started (since the process began)",
    ["state"],
)
MESSAGES_IN = Counter("chat_messages_in_total", "chat messages accepted from clients")
MESSAGES_OUT = Counter(
    "chat_messages_out_total", "new message broadcasts sent by this instance"
)
REFUSED = Counter("chat_refused_total", "client inputs refused", ["reason"])
PUBLISH_FAILURES = Counter(
    "chat_redis_publish_failures_total",
    "messages Redis would not take for other instances",
)
EVENT_SECONDS = Histogram(
    "chat_event_seconds",
    "time to handle one client event",
    ["event"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
SCRIPT_BATCHES = Counter(
    "chat_redis_script_batches_total",
    "pipelines of scripts sent to Redis for concurrent logins, leaves and "
    "messages (chat_redis_scripts_batched_total / this = scripts per pipeline)",
)
SCRIPTS_BATCHED = Counter(
    "chat_redis_scripts_batched_total", "scripts sent in those pipelines"
)
HISTORY_READS = Counter(
    "chat_history_reads_total",
    "login histories, by where they came from: kept (the room's newest "
    "messages this instance heard) or stream (a Redis read)",
    ["source"],
)
LOGINS_WAITING = Gauge(
    "chat_logins_waiting", "logins queued for a slot (LOGINS_IN_FLIGHT) right now"
)
LOGIN_SECONDS = Histogram(
    "chat_login_seconds",
    "a login from its arrival to its answer, the wait for a slot included "
    "(add user and logins in the connection's auth alike)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BUILD = Info("chat_build", "the release this instance runs")
DEGRADED = Gauge(
    "chat_degraded", "1 while this instance cannot serve the whole cluster (Redis)"
)
ROOMS_KEPT = Gauge(
    "chat_rooms_kept",
    "rooms this instance keeps state for, by structure: channel (subscribed), "
    "delivery (ids and counts), tail (newest messages); each is freed once "
    "the room has no local member (after ROOM_LINGER_S)",
    ["structure"],
)
REDIS_MEMORY = Gauge(
    "chat_redis_memory_bytes",
    "Redis memory: used, and maxmemory (the budget; 0 when unset), read at scrape",
    ["kind"],
)
GC_PAUSE = Histogram(
    "chat_gc_pause_seconds",
    "how long one garbage collection stopped the process, by generation",
    ["generation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
