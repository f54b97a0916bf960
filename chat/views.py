"""HTTP routes: the chat page, a health check for load balancers, metrics."""

from __future__ import annotations

import os

from flask import Blueprint, Response, current_app, render_template
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

bp = Blueprint("chat", __name__)


@bp.get("/")
def index() -> str:
    """The chat page; the room comes from ``?room=`` in the page's own script."""
    return render_template("index.html")


@bp.get("/healthz")
def healthz() -> tuple[dict, int]:
    """200 when this instance serves the whole cluster, 503 with the reason if not."""
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
    """Prometheus text format: counts and timings of this instance only."""
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
