"""HTTP routes: the chat page, a health check for load balancers, metrics."""

from __future__ import annotations

import os
import time

import redis
from flask import Blueprint, Response, abort, current_app, render_template, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chat.observe import metrics as chat_metrics
from chat.transport.clientaddr import client_address, in_networks, parse_networks

bp = Blueprint("chat", __name__)


@bp.get("/")
def index() -> str:
    """The chat page; the room comes from ``?room=`` in the page's own script."""
    return render_template("index.html")


def degraded_reason(state, manager) -> str | None:
    """Why this instance cannot serve the whole cluster now, or None."""
    reason = state.presence.degraded_reason
    if reason is None and getattr(manager, "listening", True) is False:
        reason = "redis: not subscribed to the message queue"
    return reason


def _internal() -> bool:
    """True for a client in INTERNAL_NETWORKS (loopback by default).

    Instance ids, pids, Redis errors and metrics tell an attacker how the
    deployment is built; the public gets the status word only.
    """
    config = current_app.config
    address = client_address(request.environ, parse_networks(config["TRUSTED_PROXIES"]))
    return in_networks(address, parse_networks(config["INTERNAL_NETWORKS"]))


@bp.get("/healthz")
def healthz() -> tuple[dict, int]:
    """Liveness: 503 only when the instance is wedged and should be restarted.

    Redis being away is not a liveness failure (restarting would not bring
    it back, and would drop every local user): it shows in /readyz. The
    details go to INTERNAL_NETWORKS only.
    """
    body = _details()
    state = current_app.extensions["chat"]
    last_try = getattr(state.presence, "last_beat_attempt", None)
    ttl = current_app.config["PRESENCE_TTL_S"]
    wedged = last_try is not None and time.monotonic() - last_try > ttl
    body["status"] = "wedged" if wedged else "ok"
    return _public(body), 503 if wedged else 200


@bp.get("/readyz")
def readyz() -> tuple[dict, int]:
    """Readiness: 200 when this instance can serve a chat, 503 if not.

    Not ready: draining, Redis unusable or not subscribed (degraded), or
    handlers failing more than READY_MAX_FAILURES_PER_MIN times a minute
    (a broken release). Liveness stays in /healthz: restarting would not fix
    any of these.
    """
    body = _details()
    state = current_app.extensions["chat"]
    reason = degraded_reason(state, current_app.extensions["socketio"].server.manager)
    failures = state.failures.count()
    if state.draining:
        body.update(status="draining", reason="shutting down")
    elif reason:
        body.update(status="degraded", reason=reason)
    elif failures > current_app.config["READY_MAX_FAILURES_PER_MIN"]:
        body.update(
            status="failing", reason=f"{failures} handler failures in the last minute"
        )
    else:
        body.update(status="ok")
    return _public(body), 200 if body["status"] == "ok" else 503


def _details() -> dict:
    state = current_app.extensions["chat"]
    return {
        "instance": state.instance_id,
        "mode": "cluster" if current_app.config["REDIS_URL"] else "single",
        "release": current_app.config["RELEASE"],
        "localUsers": len(state.presence.local),
        "pid": os.getpid(),
    }


def _public(body: dict) -> dict:
    """The whole body for INTERNAL_NETWORKS, the status word for anyone else."""
    return body if _internal() else {"status": body["status"]}


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format: counts and timings; INTERNAL_NETWORKS only."""
    if not _internal():
        abort(404)
    _read_redis_memory(current_app.extensions["chat"])
    # ``mimetype=`` would append a second charset to Prometheus' type.
    return Response(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _read_redis_memory(state) -> None:
    """Redis memory used against its budget, for ``chat_redis_memory_bytes``:
    one INFO per scrape, nothing when Redis does not answer."""
    if state.redis is None:
        return
    try:
        info = state.redis.info("memory")
    except redis.RedisError:
        return
    chat_metrics.REDIS_MEMORY.labels("used").set(info.get("used_memory", 0))
    chat_metrics.REDIS_MEMORY.labels("max").set(info.get("maxmemory", 0))
