"""HTTP routes: the chat page, a health check for load balancers, metrics."""

from __future__ import annotations

import os

from flask import Blueprint, Response, abort, current_app, render_template, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chat.clientaddr import client_address, in_networks, parse_networks

bp = Blueprint("chat", __name__)


@bp.get("/")
def index() -> str:
    """The chat page; the room comes from ``?room=`` in the page's own script."""
    return render_template("index.html")


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
    """200 when this instance serves the whole cluster, 503 if not.

    The reason and the instance's details go to INTERNAL_NETWORKS only.
    """
    body, status = _health()
    if not _internal():
        body = {"status": body["status"]}
    return body, status


def _health() -> tuple[dict, int]:
    state = current_app.extensions["chat"]
    body = {
        "status": "ok",
        "instance": state.instance_id,
        "mode": "cluster" if current_app.config["REDIS_URL"] else "single",
        "localUsers": len(state.presence.local),
        # Tells which process answered when two share a port in a rolling restart.
        "pid": os.getpid(),
    }
    if state.draining:
        body.update(status="draining", reason="shutting down")
        return body, 503
    manager = current_app.extensions["socketio"].server.manager
    reason = state.presence.degraded_reason
    if reason is None and getattr(manager, "listening", True) is False:
        reason = "redis: not subscribed to the message queue"
    if reason:
        body.update(status="degraded", reason=reason)
        return body, 503
    return body, 200


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format: counts and timings; INTERNAL_NETWORKS only."""
    if not _internal():
        abort(404)
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
